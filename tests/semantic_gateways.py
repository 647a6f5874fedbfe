"""Simulated workers and gateways with the semantic cache on, made on demand by a test and
stopped after it (the semwire, verify and upfuzz suites' fixtures)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from config.cost_model import CostModelConfig
from config.gateway import GatewayConfig
from config.loader import build
from config.worker import SimEngineConfig, WorkerConfig
from gateway.server import RunningGateway, start_gateway
from gpu_worker.engine_api import Engine
from gpu_worker.server import WorkerHandle, start_worker
from gpu_worker.sim_engine import SimEngine

MakeGateway = Callable[..., Awaitable[RunningGateway]]


def fast_sim(model: str) -> SimEngine:
    """A simulated engine whose modelled steps take a thousandth of their time."""
    cfg = SimEngineConfig(num_blocks=256, cost_model=CostModelConfig(time_scale=0.001))
    return SimEngine(cfg, model_id=model)


@asynccontextmanager
async def running_worker(engine: Engine, model: str) -> AsyncIterator[WorkerHandle]:
    """A worker server over `engine` on 127.0.0.1 port 0, closed on exit."""
    handle = await start_worker(engine, WorkerConfig(host="127.0.0.1", port=0, model=model))
    try:
        yield handle
    finally:
        await handle.close()


@asynccontextmanager
async def gateway_factory(
    worker_url: str,
    st_model: object,
    clock: Callable[[], float],
    api_keys: dict[str, str],
    admin_key: str,
) -> AsyncIterator[MakeGateway]:
    """`make(semantic=None, **overrides)` starts a gateway on port 0 with those semantic-cache
    settings and gateway-config overrides; every gateway made is stopped on exit."""
    gateways: list[RunningGateway] = []

    async def make(semantic: dict[str, Any] | None = None, **overrides: Any) -> RunningGateway:
        cfg: dict[str, Any] = {
            "port": 0,
            "health": {"interval_s": 30.0, "timeout_s": 2.0},
            "api_keys": api_keys,
            "admin_keys": [admin_key],
            "semantic_cache": semantic or {},
        } | overrides
        gw = await start_gateway(
            build(cfg, GatewayConfig), [worker_url], semantic_model=st_model, clock=clock
        )
        gateways.append(gw)
        return gw

    try:
        yield make
    finally:
        for gw in gateways:
            await gw.stop()
