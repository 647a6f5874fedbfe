"""Seeded fuzz of what a worker feeds the fleet view: `/health`, `/v1/models`, `/stats` and the
KV event stream. Whatever it sends, probes and polls end within their bounds, the gateway keeps
serving (the good worker at once; the bad one, which shares its model, after a good probe), no
request is answered 500, and the KV index holds only what a well-formed stream said.

Reproduce a failure: `UPFUZZ_SEED=<seed> pytest tests/upfuzz -k <scenario>` (both are printed).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from gateway.keys import FLEET, FLEET_CACHE, PROBER
from gateway.server import start_gateway
from tests.upfuzz.bad_worker import (
    GOOD_MODEL,
    BadWorker,
    Handler,
    Request,
    Writer,
    chunk,
    head,
    send_json,
)
from tests.upfuzz.client_checks import ask, check_recovered, fuzz_config, wait_for
from tests.upfuzz.scenarios import dumps

SEED = int(os.environ.get("UPFUZZ_SEED", "20261122"))
MAX_TAKEN_BYTES = 16 * 1024 * 1024  # of an endless reply to one GET (socket buffers included)
PROBE_BOUND_S = 3.0  # a probe round (probe timeout 0.5 s) must end within this
SSE_HEAD = head(200, {"Content-Type": "text/event-stream", "Transfer-Encoding": "chunked"})
Made = tuple[Handler, dict[str, Any]]


def answer(status: int, body: bytes, content_type: str = "application/json") -> Handler:
    async def handler(req: Request, writer: Writer) -> bool:
        return await send_json(writer, status, body, **{"Content-Type": content_type})

    return handler


def slow(seconds: float) -> Handler:
    async def handler(req: Request, writer: Writer) -> bool:
        await asyncio.sleep(seconds)
        return await send_json(writer, 200, b'{"status":"ok"}')

    return handler


class Endless:
    """A 200 whose body never ends; `sent_bytes`: the most one request took before the gateway
    gave up on it."""

    def __init__(self) -> None:
        self.sent_bytes = 0

    async def __call__(self, req: Request, writer: Writer) -> bool:
        writer.write(
            head(200, {"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
        )
        piece = chunk(b" " * 65536)
        sent = 0
        while True:  # until the gateway gives up on it (the handler is cancelled at the end)
            writer.write(piece)
            await writer.drain()
            sent += len(piece)
            self.sent_bytes = max(self.sent_bytes, sent)


def not_http() -> Handler:
    async def handler(req: Request, writer: Writer) -> bool:
        writer.write(b"ICY 200 OK\r\n\r\n{}")
        await writer.drain()
        return False

    return handler


STATS_VARIANTS: list[Any] = [
    {"model": "bad-model", "tokenizer": "byte", "block_size": 0},
    {"model": "bad-model", "tokenizer": "byte", "block_size": -16},
    {"model": "bad-model", "tokenizer": "byte", "running": -3, "waiting": -1},
    {"model": "bad-model", "tokenizer": "byte", "total_blocks": 0, "free_blocks": 10},
    {"model": "bad-model", "tokenizer": "byte", "queued_prefill_tokens": 2**62},
    {"model": "bad-model", "tokenizer": "no-such-tokenizer", "block_size": 16},
    {"model": 7, "running": "many"},
    [1, 2, 3],
]


def stats_body(pick: int) -> Callable[[random.Random], Made]:
    return lambda rng: (answer(200, orjson.dumps(STATS_VARIANTS[pick])), {"pick": pick})


# Probe and poll scenarios: (name, route, make). Each is installed on the bad worker, then the
# test probes, polls and sends requests of the shared model.
FEEDS: list[tuple[str, str, Callable[[random.Random], Made]]] = [
    ("health_html_500", "health", lambda rng: (answer(500, b"<h1>down</h1>", "text/html"), {})),
    ("health_garbage_200", "health", lambda rng: (answer(200, b"\xff\x00junk"), {})),
    ("health_slow", "health", lambda rng: (slow(2.0), {})),
    ("health_endless", "health", lambda rng: (Endless(), {})),
    ("health_not_http", "health", lambda rng: (not_http(), {})),
    ("models_garbage", "models_route", lambda rng: (answer(200, b"{nope"), {})),
    ("models_wrong_shape", "models_route", lambda rng: (answer(200, b'{"data":"x"}'), {})),
    ("models_endless", "models_route", lambda rng: (Endless(), {})),
    ("stats_garbage", "stats", lambda rng: (answer(200, b"<html>"), {})),
    ("stats_slow", "stats", lambda rng: (slow(1.5), {})),
    ("stats_endless", "stats", lambda rng: (Endless(), {})),
    ("stats_not_http", "stats", lambda rng: (not_http(), {})),
    *((f"stats_odd_values_{i}", "stats", stats_body(i)) for i in range(len(STATS_VARIANTS))),
]


@pytest.mark.parametrize(("name", "route", "make"), FEEDS, ids=[f[0] for f in FEEDS])
async def test_probe_and_stats_feeds(fleet, name, route, make) -> None:
    gw, bad = fleet
    handler, params = make(random.Random(f"{SEED}:{name}"))
    repro = f"[UPFUZZ_SEED={SEED} -k {name}; params {dumps(params)}]"
    fleet_view = gw.app[FLEET]
    if route == "models_route":
        fleet_view.mark_failed(fleet_view.workers[0], "test: rejoin, so its models are asked")
    setattr(bad, route, handler)
    started = time.monotonic()
    for _ in range(3):  # enough in a row to take a worker out, if its answers say so
        await gw.app[PROBER].probe_all()
    assert time.monotonic() - started < 3 * PROBE_BOUND_S, f"probes too slow: {repro}"
    stats_polled = bad.stats_requests
    # Requests of the model both workers serve: the fleet serves them whatever the bad worker's
    # feeds say (the poller polls every 50 ms meanwhile).
    for i in range(6):
        outcome = await ask(gw, f"{name} {i}", GOOD_MODEL, i % 2 == 1)
        assert outcome.kind(i % 2 == 1) == "ok", f"{outcome.body[:200]!r} {repro}"
    if route == "stats":
        await wait_for(lambda: bad.stats_requests > stats_polled + 1, f"polls go on {repro}")
    if isinstance(handler, Endless):  # the gateway stopped reading it, early
        assert handler.sent_bytes < MAX_TAKEN_BYTES, f"{handler.sent_bytes} bytes read {repro}"
    await check_recovered(gw, bad, repro)


# -- the KV event stream --


def kv_stream(events: list[bytes], then: str = "hang") -> Handler:
    """A `/kv_events` reply: `events` (whole SSE events), then "hang" or "end"."""

    async def handler(req: Request, writer: Writer) -> bool:
        writer.write(SSE_HEAD + b"".join(chunk(e) for e in events))
        await writer.drain()
        if then == "end":
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            return False
        await asyncio.sleep(3600)
        return False

    return handler


def kv_raw(data: bytes) -> Handler:
    """`data` as it is (framing included), then hang."""

    async def handler(req: Request, writer: Writer) -> bool:
        writer.write(data)
        await writer.drain()
        await asyncio.sleep(3600)
        return False

    return handler


def event(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


SNAPSHOT = event({"seq": 1, "snapshot": True, "stored": [11, 22, 33]})


def kv_huge(rng: random.Random) -> Made:
    count = rng.randrange(40_000, 60_000)  # ~1 MB: over the test's max_event_bytes
    big = event({"seq": 2, "stored": list(range(10**12, 10**12 + count))})
    return kv_stream([SNAPSHOT, big]), {"hashes": count}


KV: list[tuple[str, Callable[[random.Random], Made]]] = [
    ("kv_garbage", lambda rng: (kv_stream([SNAPSHOT, b"data: {{{\n\n"]), {})),
    ("kv_not_json_object", lambda rng: (kv_stream([SNAPSHOT, b"data: [1,2]\n\n"]), {})),
    ("kv_gap", lambda rng: (kv_stream([SNAPSHOT, event({"seq": 3, "stored": [44]})]), {})),
    ("kv_first_not_snapshot", lambda rng: (kv_stream([event({"seq": 1, "stored": [5]})]), {})),
    (
        "kv_unknown_kind",
        lambda rng: (kv_stream([SNAPSHOT, event({"seq": 2, "kind": "cleared", "x": 1})]), {}),
    ),
    ("kv_hash_type", lambda rng: (kv_stream([SNAPSHOT, event({"seq": 2, "stored": ["ab"]})]), {})),
    ("kv_hash_float", lambda rng: (kv_stream([SNAPSHOT, event({"seq": 2, "stored": [1.5]})]), {})),
    ("kv_seq_type", lambda rng: (kv_stream([SNAPSHOT, event({"seq": "2", "stored": [1]})]), {})),
    ("kv_huge_snapshot", kv_huge),
    ("kv_no_event_end", lambda rng: (kv_stream([SNAPSHOT, b"data: " + b"7" * 2_000_000]), {})),
    ("kv_ends", lambda rng: (kv_stream([SNAPSHOT], then="end"), {})),
    ("kv_html_500", lambda rng: (answer(500, b"<h1>no</h1>", "text/html"), {})),
    ("kv_chunked_broken", lambda rng: (kv_raw(SSE_HEAD + chunk(SNAPSHOT) + b"zz\r\n"), {})),
    ("kv_not_http", lambda rng: (not_http(), {})),
]


@pytest.mark.parametrize(("name", "make"), KV, ids=[k[0] for k in KV])
async def test_kv_event_stream(fleet, name, make) -> None:
    """The bad stream never leaves anything but a well-formed snapshot's hashes in the index;
    the subscriber survives it and syncs again once the stream behaves."""
    gw, bad = fleet
    handler, params = make(random.Random(f"{SEED}:{name}"))
    repro = f"[UPFUZZ_SEED={SEED} -k {name}; params {dumps(params)}]"
    cache = gw.app[FLEET_CACHE].workers["w0"]
    seen = bad.kv_requests
    bad.kv_events = handler
    # Two connections to the bad stream: the subscriber lived through the first one's end.
    await wait_for(lambda: bad.kv_requests >= seen + 2, f"no reconnect {repro}", timeout_s=8.0)
    assert set(cache.events._held) <= {11, 22, 33}, f"junk in the index {repro}"
    for i in range(4):
        outcome = await ask(gw, f"{name} {i}", GOOD_MODEL, i % 2 == 1)
        assert outcome.kind(i % 2 == 1) == "ok", f"{outcome.body[:200]!r} {repro}"
    bad.kv_events = kv_stream([SNAPSHOT, event({"seq": 2, "stored": [44], "removed": [11]})])
    await wait_for(lambda: set(cache.events._held) == {22, 33, 44}, f"no resync {repro}", 8.0)
    await check_recovered(gw, bad, repro)


async def test_a_stream_cut_after_each_snapshot_is_not_reconnected_at_full_speed(fleet) -> None:
    """A worker that ends its event stream right after each snapshot: the snapshot must not
    reset the reconnect backoff (it would be fetched every `reconnect_min_s`)."""
    gw, bad = fleet
    bad.kv_events = kv_stream([SNAPSHOT], then="end")
    await wait_for(lambda: bad.kv_requests >= 1, "first connection")
    first = bad.kv_requests
    await asyncio.sleep(1.0)  # the measured interval itself, not a wait for readiness
    per_s = bad.kv_requests - first
    # Backoff doubling from 0.05 s to the test's 0.2 s cap: at most ~7 in a second.
    assert per_s <= 8, f"{per_s} connections in 1 s"


@pytest.mark.parametrize("fleet", [{"max_event_bytes": 1024}], indirect=True, ids=["1KiB"])
async def test_an_event_over_the_limit_is_refused_even_when_read_whole(fleet) -> None:
    """An event over `max_event_bytes` that arrives in one read (so it is complete before the
    partial-event bound is looked at) ends the connection too."""
    gw, bad = fleet
    cache = gw.app[FLEET_CACHE].workers["w0"]
    seen = bad.kv_requests
    big = event({"seq": 2, "stored": list(range(1000, 1400))})  # ~2 KiB: over the limit
    bad.kv_events = kv_stream([SNAPSHOT, big, event({"seq": 3, "stored": [99]})])
    await wait_for(lambda: bad.kv_requests >= seen + 2, "no reconnect", timeout_s=8.0)
    assert set(cache.events._held) <= {11, 22, 33}, sorted(cache.events._held)[:10]


async def test_a_slow_stats_worker_does_not_hold_back_the_others_polls(st_model) -> None:
    """Two workers, one whose `/stats` takes 1.5 s (past the poll's timeout): the other is still
    polled about every `stats_interval_s` (50 ms here), not once per slow poll."""
    slow_one, quick_one = BadWorker(), BadWorker()
    urls = [await slow_one.start(), await quick_one.start()]
    slow_one.stats = slow(1.5)
    gw = await start_gateway(fuzz_config(), urls, semantic_model=st_model)
    try:
        before = quick_one.stats_requests
        await asyncio.sleep(1.0)  # the measured interval itself, not a wait for readiness
        polls = quick_one.stats_requests - before
        assert polls >= 5, f"{polls} polls of the quick worker in 1 s"
    finally:
        await gw.stop()
        await slow_one.close()
        await quick_one.close()
