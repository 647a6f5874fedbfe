"""`semantic_cache.lookup: parallel`: the worker gets the request while the cache looks it up;
a hit drops the worker's request, a miss relays the worker's reply (streamed or not) as usual."""

from __future__ import annotations

import asyncio
import time

from gateway.keys import FLEET
from gpu_worker.server import WorkerHandle

from .test_gateway_cache import PY, PY_PARAPHRASE, ask, ask_streamed, categories, settle


async def _until(condition, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_parallel_hit_serves_cache_and_frees_the_worker(
    make_gateway, client, worker: WorkerHandle
):
    gw = await make_gateway({"categories": categories(), "lookup": "parallel"})
    c = client(gw)
    status, _, text, _ = await ask(c, PY)
    assert status == "miss" and text
    await settle(gw)
    status, similarity, hit_text, reply = await ask(c, PY_PARAPHRASE)
    assert status == "hit" and hit_text == text and similarity is not None
    assert reply.usage.completion_tokens == 0
    # The worker's copy of the request was dropped: no slot held in the gateway or the worker.
    assert [w.in_flight for w in gw.app[FLEET].workers] == [0]
    await _until(lambda: worker.state.num_pending == 0)


async def test_parallel_miss_streams_the_workers_reply_and_stores_it(make_gateway, client):
    gw = await make_gateway({"categories": categories(), "lookup": "parallel"})
    c = client(gw)
    raw = await ask_streamed(c, PY)
    assert raw.headers["x-kvgate-cache"] == "miss"
    pieces = [chunk.choices[0].delta.content or "" async for chunk in raw.parse() if chunk.choices]
    assert "".join(pieces)
    await settle(gw)
    status, _, hit_text, _ = await ask(c, PY)
    assert status == "hit" and hit_text == "".join(pieces)
    assert [w.in_flight for w in gw.app[FLEET].workers] == [0]


async def test_parallel_lookup_with_no_worker_still_serves_hits(make_gateway, client, worker):
    gw = await make_gateway({"categories": categories(), "lookup": "parallel"})
    c = client(gw)
    assert (await ask(c, PY))[0] == "miss"
    await settle(gw)
    gw.app[FLEET].workers[0].healthy = False  # the fleet is gone; the cache still answers
    assert (await ask(c, PY_PARAPHRASE))[0] == "hit"
