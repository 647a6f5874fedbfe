"""One misbehaving worker (bad_worker.py), one good simulated worker, and a gateway in front of
both with the semantic cache on: all real servers on 127.0.0.1 port 0."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from config.cost_model import CostModelConfig
from config.gateway import GatewayConfig
from config.loader import build
from config.worker import SimEngineConfig, WorkerConfig
from gateway.keys import FLEET, PROBER
from gateway.server import RunningGateway, start_gateway
from gpu_worker.server import WorkerHandle, start_worker
from gpu_worker.sim_engine import SimEngine
from tests.upfuzz.bad_worker import GOOD_MODEL, BadWorker
from tests.upfuzz.client_checks import MAX_REPLY_BYTES, READ_TIMEOUT_S


@pytest.fixture
async def bad_worker() -> AsyncIterator[BadWorker]:
    worker = BadWorker()
    await worker.start()
    try:
        yield worker
    finally:
        await worker.close()


@pytest.fixture
async def good_worker() -> AsyncIterator[WorkerHandle]:
    engine = SimEngine(
        SimEngineConfig(num_blocks=256, cost_model=CostModelConfig(time_scale=0.001)),
        model_id=GOOD_MODEL,
    )
    handle = await start_worker(engine, WorkerConfig(host="127.0.0.1", port=0, model=GOOD_MODEL))
    try:
        yield handle
    finally:
        await handle.close()


def fuzz_config(
    lookup: str = "sequential", max_event_bytes: int = 512 * 1024, **overrides: Any
) -> GatewayConfig:
    every = {"threshold": 0.9, "ttl_s": 3_600.0, "max_entries": 1000}
    base: dict[str, Any] = {
        "port": 0,
        # Probes are driven by the tests (`PROBER.probe_all()`); stats and events run as usual.
        "health": {"interval_s": 30.0, "timeout_s": 0.5},
        "upstream": {
            "read_timeout_s": READ_TIMEOUT_S,
            "connect_timeout_s": 1.0,
            "max_reply_bytes": MAX_REPLY_BYTES,
        },
        "fleet_view": {
            "stats_interval_s": 0.05,
            "events_read_timeout_s": 1.0,
            "reconnect_max_s": 0.2,
            "max_event_bytes": max_event_bytes,
        },
        "semantic_cache": {
            "categories": {
                name: every for name in ("code", "chat", "factual", "time_sensitive", "math")
            },
            "fallback": every,
            "lookup": lookup,
        },
    }
    return build(base | overrides, GatewayConfig)


@pytest.fixture
async def fleet(
    request: pytest.FixtureRequest,
    bad_worker: BadWorker,
    good_worker: WorkerHandle,
    st_model: object,
) -> AsyncIterator[tuple[RunningGateway, BadWorker]]:
    """The gateway over [bad worker, good worker]; `indirect` param: `fuzz_config` arguments."""
    options = getattr(request, "param", {})
    gw = await start_gateway(
        fuzz_config(**options), [bad_worker.url, good_worker.url], semantic_model=st_model
    )
    try:
        # The start-up probe may time out on a loaded box: probe until both are in (bounded).
        for _ in range(20):
            if all(w.healthy for w in gw.app[FLEET].workers):
                break
            await gw.app[PROBER].probe_all()
        assert all(w.healthy for w in gw.app[FLEET].workers), "a worker never joined the fleet"
        yield gw, bad_worker
    finally:
        await gw.stop()
