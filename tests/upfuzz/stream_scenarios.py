"""Streamed replies of the misbehaving worker, scenario by scenario (the table and the rules are
in scenarios.py)."""

from __future__ import annotations

import asyncio
import random

from tests.upfuzz.bad_worker import (
    DONE,
    PAUSE_S,
    SSE_HEAD,
    Made,
    Request,
    Writer,
    body_200,
    chunk,
    completion_json,
    delta_event,
    good_events,
    head,
    model_of,
    raw,
    sse,
)

# -- streamed replies --


MALFORMED = [
    b"data: {not json\n\n",
    b"data: [1, 2\n\n",
    b"data:\n\n",
    b"dta: x\n\n",
    b"data: 42\n\n",
]


def sse_malformed(rng: random.Random, pick: int | None = None) -> Made:
    bad = MALFORMED[rng.randrange(len(MALFORMED)) if pick is None else pick]

    def events(req: Request) -> list[bytes]:
        m = model_of(req)
        return [delta_event(m, "fine"), bad, delta_event(m, None, "stop"), DONE]

    return sse(events), {"bad": bad.decode()}


def sse_error_event(rng: random.Random) -> Made:
    with_done = rng.random() < 0.5
    err = b'data: {"error":{"message":"engine fell over","type":"server_error"}}\n\n'

    def events(req: Request) -> list[bytes]:
        return [delta_event(model_of(req), "fine"), err] + ([DONE] if with_done else [])

    return sse(events), {"with_done": with_done}


def sse_no_done(rng: random.Random) -> Made:
    return sse(lambda req: good_events(req)[:-1]), {}


def sse_done_twice(rng: random.Random) -> Made:
    return sse(lambda req: [*good_events(req), DONE]), {}


def sse_after_done(rng: random.Random) -> Made:
    def events(req: Request) -> list[bytes]:
        m = model_of(req)
        return [*good_events(req), delta_event(m, " LATE"), delta_event(m, None, "stop"), DONE]

    return sse(events), {}


def sse_huge_chunk(rng: random.Random) -> Made:
    size = rng.randrange(2_000_000, 4_000_000)

    def events(req: Request) -> list[bytes]:
        m = model_of(req)
        return [delta_event(m, "x" * size), delta_event(m, None, "stop"), DONE]

    return sse(events), {"size": size}


def sse_one_byte_at_a_time(rng: random.Random) -> Made:
    async def handler(req: Request, writer: Writer) -> bool:
        data = SSE_HEAD + b"".join(chunk(e) for e in good_events(req)) + b"0\r\n\r\n"
        for i in range(len(data)):
            writer.write(data[i : i + 1])
            await writer.drain()
        return True

    return handler, {}


def sse_pause(rng: random.Random) -> Made:
    async def handler(req: Request, writer: Writer) -> bool:
        events = good_events(req)
        writer.write(SSE_HEAD + chunk(events[0]))
        await writer.drain()
        await asyncio.sleep(PAUSE_S)
        for e in events[1:]:
            writer.write(chunk(e))
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return False

    return handler, {}


def sse_reset_after_first(rng: random.Random) -> Made:
    def data(req: Request) -> bytes:
        return SSE_HEAD + chunk(delta_event(model_of(req), "fine"))

    return raw(data, "abort"), {}


def sse_chunked_broken(rng: random.Random) -> Made:
    def data(req: Request) -> bytes:
        return SSE_HEAD + chunk(delta_event(model_of(req), "fine")) + b"nope\r\n"

    return raw(data, "close"), {}


def sse_headers_then_nothing(rng: random.Random) -> Made:
    return raw(lambda req: SSE_HEAD, "hang"), {}


def stream_answered_whole(rng: random.Random) -> Made:
    return body_200(lambda req: completion_json(model_of(req), "fine answer")), {}


def sse_close_delimited(rng: random.Random) -> Made:
    def data(req: Request) -> bytes:
        return head(200, {"Content-Type": "text/event-stream"}) + b"".join(good_events(req))

    return raw(data, "close"), {}
