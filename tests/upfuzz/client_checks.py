"""The gateway's config in these tests (`fuzz_config`), what a client of it saw (`Outcome`, `ask`)
and what must hold after any misbehaving worker (`check_recovered`): shared by the upfuzz tests."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import orjson

from config.gateway import GatewayConfig
from config.loader import build
from gateway.keys import FLEET, PROBER
from gateway.server import RunningGateway
from tests.upfuzz.bad_worker import BAD_MODEL, GOOD_MODEL, BadWorker

CHAT = "/v1/chat/completions"
REPLY_BOUND_S = 8.0  # any answer, error or end of stream must come within this
# The gateway's config in these tests (conftest.fuzz_config):
READ_TIMEOUT_S = 0.6  # longest silence from a worker (kept short for the tests)
MAX_REPLY_BYTES = 4 * 1024 * 1024  # longest whole reply it holds


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
        if not before:
            return "stream with no events before [DONE]"
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
