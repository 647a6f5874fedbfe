"""One misbehaving worker (bad_worker.py), one good simulated worker, and a gateway in front of
both with the semantic cache on: all real servers on 127.0.0.1 port 0."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway.keys import FLEET, PROBER
from gateway.server import RunningGateway, start_gateway
from gpu_worker.server import WorkerHandle
from tests.semantic_gateways import fast_sim, running_worker
from tests.upfuzz.bad_worker import GOOD_MODEL, BadWorker
from tests.upfuzz.client_checks import fuzz_config


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
    async with running_worker(fast_sim(GOOD_MODEL), GOOD_MODEL) as handle:
        yield handle


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
