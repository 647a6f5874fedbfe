"""Fixtures of tests/edges: real gateways on 127.0.0.1 over in-process simulated workers (the
harness of tests/cancel, plus workers with a small context)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from config.cost_model import CostModelConfig
from config.worker import SimEngineConfig, WorkerConfig
from gpu_worker.byte_tokenizer import ByteTokenizer
from gpu_worker.server import WorkerHandle, start_worker
from gpu_worker.sim_engine import SimEngine
from tests.cancel.harness import MODEL, Stack

CONTEXT_TOKENS = 256  # max_model_len of `small_worker`: a few hundred bytes of byte tokens


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    s = Stack()
    yield s
    await s.close()


async def small_worker(
    stack: Stack, tokenizer: Any = None, time_scale: float = 0.05
) -> WorkerHandle:
    """An in-process sim worker whose context is `CONTEXT_TOKENS` (closed with `stack`)."""
    cfg = WorkerConfig(host="127.0.0.1", port=0, model=MODEL, kv_heartbeat_s=0.5)
    engine_cfg = SimEngineConfig(
        max_model_len=CONTEXT_TOKENS, cost_model=CostModelConfig(time_scale=time_scale)
    )
    tokenizer = tokenizer or ByteTokenizer(cfg.default_system_prompt)
    engine = SimEngine(engine_cfg, model_id=MODEL, tokenizer=tokenizer)
    stack.workers.append(await start_worker(engine, cfg))
    return stack.workers[-1]
