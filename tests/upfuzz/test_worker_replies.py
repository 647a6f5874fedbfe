"""Seeded fuzz of what a worker sends back: whatever it does, the client gets the reply or a clear
OpenAI-shaped error (or, mid-stream, an SSE error event and `[DONE]`) within a bound; the gateway
records no 500, gives every in-flight slot back, stores no broken reply in the semantic cache,
and keeps serving (the good worker at once, the bad one after its next good probe).

Reproduce a failure: `UPFUZZ_SEED=<seed> pytest tests/upfuzz -k <scenario>` (both are printed).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time

import httpx
import orjson
import pytest

from gateway.keys import PROBER, SEMANTIC
from tests.upfuzz.bad_worker import (
    BAD_MODEL,
    GOOD_MODEL,
    MAX_TAKEN_BYTES,
    Request,
    Writer,
    delta_event,
    send_sse,
)
from tests.upfuzz.client_checks import CHAT, READ_TIMEOUT_S, REPLY_BOUND_S, ask, check_recovered
from tests.upfuzz.scenarios import SCENARIOS, dumps

SEED = int(os.environ.get("UPFUZZ_SEED", "20261122"))
UPSTREAM_5XX = {502, 503, 504}


@pytest.mark.parametrize(
    ("name", "stream", "allowed", "make"), SCENARIOS, ids=[s[0] for s in SCENARIOS]
)
async def test_worker_reply(fleet, name, stream, allowed, make) -> None:
    gw, bad = fleet
    handler, params = make(random.Random(f"{SEED}:{name}"))
    repro = f"[UPFUZZ_SEED={SEED} -k {name}; params {dumps(params)}]"
    bad.completion = handler
    started = time.monotonic()
    outcome = await ask(gw, name, BAD_MODEL, stream)
    kind = outcome.kind(stream)
    assert kind in allowed, f"client saw {kind} (status {outcome.status}): {repro}"
    if outcome.status != 200:
        client_error = "error4xx" in allowed and 400 <= outcome.status < 500
        assert outcome.status in UPSTREAM_5XX or client_error, f"{outcome.status}: {repro}"
    assert time.monotonic() - started < REPLY_BOUND_S, repro
    taken = params.get("sent_bytes", [0])[0]
    assert taken < MAX_TAKEN_BYTES, f"gateway read {taken} bytes: {repro}"
    # The semantic cache stored nothing broken: a repeat (the worker well-behaved now) is either
    # a miss or a hit with exactly what the client was first served.
    await gw.app[SEMANTIC].drain()
    bad.reset()
    await gw.app[PROBER].probe_all()
    repeat = await ask(gw, name, BAD_MODEL, stream)
    assert repeat.kind(stream) == "ok", f"repeat: {repeat.body[:300]!r} {repro}"
    if repeat.headers.get("x-kvgate-cache") == "hit":
        assert kind == "ok", f"a broken reply was stored and served: {repro}"
        assert repeat.text(stream) == outcome.text(stream), f"hit differs: {repro}"
    await check_recovered(gw, bad, repro)


PARALLEL = [
    s
    for s in SCENARIOS
    if s[0]
    in {
        "garbage_200",
        "reset_before_reply",
        "not_http_0",
        "sse_no_done",
        "sse_pause",
        "sse_reset_after_first",
        "pause_whole",
        "error_status_not_json_4",
    }
]


@pytest.mark.parametrize("fleet", [{"lookup": "parallel"}], indirect=True, ids=["parallel"])
@pytest.mark.parametrize(
    ("name", "stream", "allowed", "make"), PARALLEL, ids=[s[0] for s in PARALLEL]
)
async def test_worker_reply_with_parallel_lookup(fleet, name, stream, allowed, make) -> None:
    """The same, with the worker asked while the cache looks (its answer waits for the miss)."""
    await test_worker_reply(fleet, name, stream, allowed, make)


async def test_http10_client_gets_the_closing_error_event_too(fleet) -> None:
    """HTTP/1.0 streams go through aiohttp's own writer, not the pipe: same ending."""
    gw, bad = fleet
    bad.completion, _ = dict((s[0], s[3]) for s in SCENARIOS)["sse_no_done"](random.Random(SEED))
    host, port = gw.url.removeprefix("http://").split(":")
    body = orjson.dumps(
        {"model": BAD_MODEL, "stream": True, "messages": [{"role": "user", "content": "1.0"}]}
    )
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"POST /v1/chat/completions HTTP/1.0\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%b" % (len(body), body)
    )
    raw = await asyncio.wait_for(reader.read(), REPLY_BOUND_S)
    writer.close()
    assert raw.split(b"\r\n", 1)[0].endswith(b"200 OK"), raw[:200]
    assert b"ended without [DONE]" in raw and raw.rstrip().endswith(b"data: [DONE]"), raw[-300:]
    await check_recovered(gw, bad, "[http10]")


async def test_good_model_retried_on_the_good_worker(fleet) -> None:
    """A worker shared by a model that resets before replying: the request goes to the other
    one, invisibly, and the resetting one leaves rotation until its next good probe."""
    gw, bad = fleet
    make = dict((s[0], s[3]) for s in SCENARIOS)["reset_before_reply"]
    bad.completion, _ = make(random.Random(SEED))
    for i in range(4):
        outcome = await ask(gw, f"retry {i}", GOOD_MODEL, i % 2 == 1)
        assert outcome.kind(i % 2 == 1) == "ok", outcome.body[:200]
    await check_recovered(gw, bad, "[retry]")


async def test_endless_stream_is_dropped_with_its_client(fleet) -> None:
    """A stream that never ends, read by a client that gives up: the gateway closes the worker's
    connection and gives the slot back."""
    gw, bad = fleet
    closed = asyncio.Event()

    async def endless(req, writer) -> bool:
        await send_sse(writer, [], end=False)
        try:
            while True:
                event = delta_event(BAD_MODEL, "more")
                writer.write(b"%x\r\n%b\r\n" % (len(event), event))
                await writer.drain()
                await asyncio.sleep(0.005)
        except ConnectionError:
            closed.set()
            return False

    bad.completion = endless
    body = {"model": BAD_MODEL, "messages": [{"role": "user", "content": "go on"}], "stream": True}
    got = 0
    async with httpx.AsyncClient(timeout=5) as http:
        async with http.stream("POST", gw.url + CHAT, json=body) as response:
            async for _ in response.aiter_bytes():
                got += 1
                if got >= 50:
                    break
    async with asyncio.timeout(5):
        await closed.wait()
    await check_recovered(gw, bad, "[endless]")


@pytest.mark.parametrize("fleet", [{"lookup": "parallel"}], indirect=True, ids=["parallel"])
async def test_a_hit_drops_the_parallel_request_to_a_hanging_worker(fleet) -> None:
    """Parallel lookup: the worker has the request while the cache looks. When the cache hits
    and that worker never answers, the hit is served at once and the worker's slot and
    connection are given back."""
    gw, bad = fleet
    first = await ask(gw, "hang-hit", BAD_MODEL, False)  # stored: the worker behaves
    assert first.kind(False) == "ok"
    await gw.app[SEMANTIC].drain()
    dropped = asyncio.Event()

    async def hang_until_dropped(req: Request, writer: Writer) -> bool:
        assert req.reader is not None
        await req.reader.read()  # b"" once the gateway closes its end
        dropped.set()
        return False

    bad.completion = hang_until_dropped
    started = time.monotonic()
    hit = await ask(gw, "hang-hit", BAD_MODEL, False)
    assert hit.headers.get("x-kvgate-cache") == "hit" and hit.kind(False) == "ok"
    assert time.monotonic() - started < REPLY_BOUND_S / 2
    async with asyncio.timeout(5):
        await dropped.wait()  # the gateway closed its connection to the worker
    await check_recovered(gw, bad, "[parallel hit]")


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_a_client_that_gives_up_on_a_silent_worker_frees_its_slot(fleet, stream) -> None:
    """The worker never answers and the client hangs up first: the gateway closes its
    connection to the worker and gives the in-flight slot back."""
    gw, bad = fleet
    dropped = asyncio.Event()
    reached = asyncio.Event()

    async def silent(req: Request, writer: Writer) -> bool:
        assert req.reader is not None
        reached.set()
        await req.reader.read()  # b"" once the gateway closes its end
        dropped.set()
        return False

    bad.completion = silent
    body = {"model": BAD_MODEL, "messages": [{"role": "user", "content": "?"}], "stream": stream}
    async with httpx.AsyncClient(timeout=10) as http:
        request = asyncio.create_task(http.post(gw.url + CHAT, json=body))
        async with asyncio.timeout(5):
            await reached.wait()
        request.cancel()  # the client hangs up before any reply byte
        hung_up = time.monotonic()
        with contextlib.suppress(asyncio.CancelledError):
            await request
    async with asyncio.timeout(5):
        await dropped.wait()
    # Dropped because the client left, not by the read timeout that would end it anyway.
    assert time.monotonic() - hung_up < READ_TIMEOUT_S
    await check_recovered(gw, bad, f"[client gave up, stream={stream}]")
