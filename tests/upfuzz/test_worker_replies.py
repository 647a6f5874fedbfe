"""Seeded fuzz of what a worker sends back: whatever it does, the client gets the reply or a clear
OpenAI-shaped error (or, mid-stream, an SSE error event and `[DONE]`) within a bound; the gateway
records no 500, gives every in-flight slot back, stores no broken reply in the semantic cache,
and keeps serving (the good worker at once, the bad one after its next good probe).

Reproduce a failure: `UPFUZZ_SEED=<seed> pytest tests/upfuzz -k <scenario>` (both are printed).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from typing import Any

import httpx
import orjson
import pytest

from gateway.keys import FLEET, PROBER, SEMANTIC
from gateway.server import RunningGateway
from tests.upfuzz.bad_worker import BAD_MODEL, GOOD_MODEL, BadWorker, delta_event, send_sse
from tests.upfuzz.scenarios import SCENARIOS, dumps

SEED = int(os.environ.get("UPFUZZ_SEED", "20261122"))
CHAT = "/v1/chat/completions"
REPLY_BOUND_S = 8.0  # any answer, error or end of stream must come within this
UPSTREAM_5XX = {502, 503, 504}


class Outcome:
    """What the client saw: status, headers, body and (for a stream) the `data:` payloads."""

    def __init__(self, status: int, headers: httpx.Headers, body: bytes, stream: bool) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.events = _data_lines(body) if stream and status == 200 else []

    def kind(self, stream: bool) -> str:
        """ "ok", "error", "stream_error", or what is wrong with it."""
        if self.status != 200:
            return "error" if _is_error_body(self.body) else f"bad error body {self.body[:200]!r}"
        if not stream:
            return "ok" if _is_completion(self.body) else f"bad 200 body {self.body[:200]!r}"
        if not self.events or self.events[-1] != b"[DONE]":
            return f"stream without a final [DONE]: {self.events[-3:]!r}"
        done_at = self.events.index(b"[DONE]")
        before = self.events[:done_at]
        # Events are relayed byte for byte: a worker's own error event need only carry a message
        # (the SDKs read that much); the gateway's own are checked for the full shape.
        if before and _is_error_body(before[-1], ("message",)):
            return "stream_error"
        if all(_is_chunk(e) for e in before):
            return "ok"
        return "ok_with_junk"  # malformed events relayed as they came (see the sse test)

    def text(self, stream: bool) -> str:
        if not stream:
            return str(orjson.loads(self.body)["choices"][0]["message"]["content"])
        parts = []
        for e in self.events[: self.events.index(b"[DONE]")]:
            obj = orjson.loads(e)
            parts += [c["delta"].get("content") or "" for c in obj["choices"]]
        return "".join(parts)


def _data_lines(body: bytes) -> list[bytes]:
    return [line[6:] for line in body.split(b"\n") if line.startswith(b"data: ")]


def _is_error_body(
    body: bytes, keys: tuple[str, ...] = ("message", "type", "param", "code")
) -> bool:
    try:
        err = orjson.loads(body)["error"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return False
    return isinstance(err, dict) and set(keys) <= err.keys() and isinstance(err["message"], str)


def _is_completion(body: bytes) -> bool:
    try:
        choice = orjson.loads(body)["choices"][0]
        return isinstance(choice["message"]["content"], str)
    except (orjson.JSONDecodeError, KeyError, TypeError, IndexError):
        return False


def _is_chunk(data: bytes) -> bool:
    try:
        obj = orjson.loads(data)
        return all(isinstance(c["delta"], dict) for c in obj["choices"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return False


async def ask(gw: RunningGateway, system: str, model: str, stream: bool) -> Outcome:
    body = {
        "model": model,
        "messages": [
            {"role": "system", "content": system},  # a cache partition per scenario
            {"role": "user", "content": "What is the tallest mountain on Earth?"},
        ],
        "max_tokens": 8,
        "temperature": 0,
        "stream": stream,
    }
    async with httpx.AsyncClient(timeout=REPLY_BOUND_S) as http:
        async with asyncio.timeout(REPLY_BOUND_S):  # a hang fails here
            response = await http.post(gw.url + CHAT, json=body)
    return Outcome(response.status_code, response.headers, response.content, stream)


async def metrics_text(gw: RunningGateway) -> str:
    async with httpx.AsyncClient(timeout=5) as http:
        return (await http.get(gw.url + "/metrics")).text


async def wait_for(condition: Any, what: str, timeout_s: float = 5.0) -> None:
    """Poll `condition()` until true (a bounded wait for the gateway's own bookkeeping)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {what}"
        await asyncio.sleep(0.01)


async def check_recovered(gw: RunningGateway, bad: BadWorker, repro: str) -> None:
    """After a scenario: no slot held, no 500, both workers serve again."""
    fleet = gw.app[FLEET]
    await wait_for(lambda: all(w.in_flight == 0 for w in fleet.workers), f"in-flight 0 {repro}")
    text = await metrics_text(gw)
    assert 'status="500"' not in text, f"a 500 on /metrics: {repro}"
    for line in text.splitlines():
        if line.startswith("kvgate_worker_in_flight{"):
            assert line.endswith(" 0.0"), f"{line}: {repro}"
    good = await ask(gw, "after", GOOD_MODEL, False)
    assert good.kind(False) == "ok", f"the fleet stopped serving: {good.body[:200]!r} {repro}"
    bad.reset()
    await gw.app[PROBER].probe_all()
    assert all(w.healthy for w in fleet.workers), f"bad worker not back after a probe: {repro}"
    again = await ask(gw, "after-bad", BAD_MODEL, False)
    assert again.kind(False) == "ok", f"bad worker, reset, does not serve: {repro}"


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
        assert outcome.status in UPSTREAM_5XX, f"status {outcome.status}: {repro}"
    assert time.monotonic() - started < REPLY_BOUND_S, repro
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
