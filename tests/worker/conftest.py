"""Fixtures: a real sim worker on 127.0.0.1 port 0 and the real openai client against it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from openai import AsyncOpenAI

from config.cost_model import CostModelConfig
from config.worker import SimEngineConfig, WorkerConfig
from gpu_worker.server import WorkerHandle, start_worker
from gpu_worker.sim_engine import SimEngine

MODEL = "sim-test"


def make_engine(time_scale: float = 0.01, **overrides: int) -> SimEngine:
    cfg = SimEngineConfig(
        num_blocks=overrides.pop("num_blocks", 256),
        cost_model=CostModelConfig(time_scale=time_scale),
        **overrides,
    )
    return SimEngine(cfg, model_id=MODEL)


async def start(engine: SimEngine, **worker: object) -> WorkerHandle:
    cfg = WorkerConfig(host="127.0.0.1", port=0, model=MODEL, **worker)  # type: ignore[arg-type]
    return await start_worker(engine, cfg)


@pytest.fixture
async def worker() -> AsyncIterator[WorkerHandle]:
    handle = await start(make_engine())
    try:
        yield handle
    finally:
        await handle.close()


@pytest.fixture
async def client(worker: WorkerHandle) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=worker.url + "/v1", api_key="none", max_retries=0) as c:
        yield c
