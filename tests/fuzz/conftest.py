"""Real servers on 127.0.0.1 port 0 for the fuzz: a gateway (semantic cache on, with the default
config's cache settings, API keys and an admin key) over two in-process simulated workers, and a
worker serving the tiny random torch model, alone or behind a gateway."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import torch

from config.cost_model import CostModelConfig
from config.engine import EngineConfig
from config.gateway import GatewayConfig
from config.loader import build
from config.worker import SimEngineConfig, WorkerConfig
from gateway.keys import PROBER
from gateway.server import RunningGateway, start_gateway
from gpu_worker.engine import TorchEngine
from gpu_worker.server import WorkerHandle, start_worker
from gpu_worker.sim_engine import SimEngine

SIM_MODEL = "sim-fuzz"
API_KEY = "sk-fuzz"
ADMIN_KEY = "adm-fuzz"


def gateway_config(**overrides: Any) -> GatewayConfig:
    cfg: dict[str, Any] = {"port": 0, "health": {"interval_s": 30.0, "timeout_s": 2.0}}
    return build(cfg | overrides, GatewayConfig)


@pytest.fixture
async def sim_workers() -> AsyncIterator[list[WorkerHandle]]:
    handles: list[WorkerHandle] = []
    for _ in range(2):
        engine = SimEngine(
            SimEngineConfig(num_blocks=512, cost_model=CostModelConfig(time_scale=0.001)),
            model_id=SIM_MODEL,
        )
        cfg = WorkerConfig(host="127.0.0.1", port=0, model=SIM_MODEL, default_max_tokens=8)
        handles.append(await start_worker(engine, cfg))
    try:
        yield handles
    finally:
        for handle in handles:
            await handle.close()


# The default config's cache and dispatch; then the other request path: the worker is asked
# while the cache looks (`lookup: parallel`, a hit abandons the worker's request) and requests
# wait in the gateway for one of two slots per worker.
GATEWAY_VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "parallel-dispatch": {
        "semantic_cache": {"lookup": "parallel"},
        "dispatch": {"max_in_flight_per_worker": 2},
    },
}


@pytest.fixture(params=list(GATEWAY_VARIANTS))
async def sim_gateway(
    request: pytest.FixtureRequest, sim_workers: list[WorkerHandle], st_model: object
) -> AsyncIterator[RunningGateway]:
    variant = GATEWAY_VARIANTS[request.param]
    cfg = gateway_config(api_keys={API_KEY: "fuzz-tenant"}, admin_keys=[ADMIN_KEY], **variant)
    gw = await start_gateway(cfg, [w.url for w in sim_workers], semantic_model=st_model)
    await gw.app[PROBER].probe_all()
    try:
        yield gw
    finally:
        await gw.stop()


def tiny_engine(num_blocks: int = 256) -> TorchEngine:
    torch.set_num_threads(1)
    return TorchEngine(
        EngineConfig(model="tiny", device="cpu", num_blocks=num_blocks, num_threads=1)
    )


@pytest.fixture
async def tiny_worker() -> AsyncIterator[WorkerHandle]:
    cfg = WorkerConfig(host="127.0.0.1", port=0, model="tiny", default_max_tokens=4)
    handle = await start_worker(tiny_engine(), cfg)
    try:
        yield handle
    finally:
        await handle.close()


@pytest.fixture
async def tiny_gateway(
    tiny_worker: WorkerHandle, st_model: object
) -> AsyncIterator[RunningGateway]:
    """The tiny worker behind a gateway with the default semantic cache."""
    gw = await start_gateway(gateway_config(), [tiny_worker.url], semantic_model=st_model)
    await gw.app[PROBER].probe_all()
    try:
        yield gw
    finally:
        await gw.stop()
