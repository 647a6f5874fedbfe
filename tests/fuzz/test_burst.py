"""A burst far over the fleet's slots, through the gateway: every request is answered (served, or
refused with OpenAI's error and a retryable status), none hangs or is lost, nothing stays held."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator

import httpx
import pytest

from gateway.keys import FLEET, METRICS, PROBER
from gateway.server import RunningGateway, start_gateway
from gpu_worker.server import WorkerHandle

from .conftest import API_KEY, SIM_MODEL, gateway_config
from .http_cases import dumps
from .probe import REPLY_BOUND_S

NUM_REQUESTS = 160
BURST_STATUSES = {200, 429, 503, 504}


@pytest.fixture
async def small_gateway(
    sim_workers: list[WorkerHandle], st_model: object
) -> AsyncIterator[RunningGateway]:
    """Two slots per worker and eight waiting places: a burst overflows both on purpose."""
    dispatch = {"max_in_flight_per_worker": 2, "max_waiting": 8}
    cfg = gateway_config(api_keys={API_KEY: "burst"}, dispatch=dispatch)
    gw = await start_gateway(cfg, [w.url for w in sim_workers], semantic_model=st_model)
    await gw.app[PROBER].probe_all()
    try:
        yield gw
    finally:
        await gw.stop()


async def test_burst_is_answered_and_leaves_nothing_held(small_gateway: RunningGateway) -> None:
    rng = random.Random(3)
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=NUM_REQUESTS)

    async def one(http: httpx.AsyncClient, i: int) -> httpx.Response:
        body: dict[str, object] = {
            "model": SIM_MODEL,
            "messages": [{"role": "user", "content": f"burst question {i} " * rng.randint(1, 30)}],
            "max_tokens": rng.randint(1, 40),
            "stream": rng.random() < 0.5,
        }
        extra = {"x-kvgate-deadline-ms": str(rng.choice([50, 500, 5000]))} if i % 3 == 0 else {}
        async with asyncio.timeout(REPLY_BOUND_S):
            reply = await http.post(
                small_gateway.url + "/v1/chat/completions",
                content=dumps(body),
                headers=headers | extra,
            )
        return reply

    async with httpx.AsyncClient(timeout=None, limits=limits) as http:
        replies = await asyncio.gather(*(one(http, i) for i in range(NUM_REQUESTS)))
    statuses = Counter(reply.status_code for reply in replies)
    assert set(statuses) <= BURST_STATUSES, statuses
    for reply in replies:
        if reply.status_code != 200:
            assert reply.json()["error"]["message"], reply.text
        if reply.status_code in (429, 503):
            assert reply.headers.get("Retry-After"), reply.headers  # when to come back
    assert statuses[200] > 0 and statuses[503] > 0, statuses  # served, and refused at the bound
    assert all(w.in_flight == 0 for w in small_gateway.app[FLEET].workers)
    assert small_gateway.app[METRICS].dispatch_waiting._value.get() == 0
