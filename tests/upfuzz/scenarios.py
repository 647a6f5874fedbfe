"""What the misbehaving worker answers to a completion, scenario by scenario (seeded).

Each scenario is `(name, stream, allowed, make)`: `make(rng)` returns the completion handler and
the parameters it drew (printed on failure, with the seed, so a reader can reproduce it).
`allowed` lists what the client may see: "ok" (a well-formed reply), "error" (an OpenAI-shaped
error with a 5xx upstream status), "stream_error" (a 200 stream that ends with an error event
and `[DONE]`). Imported by test_worker_replies.py.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

import orjson

from tests.upfuzz.bad_worker import (
    DONE,
    Handler,
    Request,
    Writer,
    chunk,
    completion_json,
    delta_event,
    good_stream_events,
    head,
    send_json,
    send_sse,
)

Made = tuple[Handler, dict[str, Any]]
SSE_HEAD = head(200, {"Content-Type": "text/event-stream", "Transfer-Encoding": "chunked"})
PAUSE_S = 1.5  # past the gateway's read timeout (conftest.READ_TIMEOUT_S)
# Most bytes the gateway may take of a reply it must give up on (its own bound plus the socket
# buffers): for scenarios whose params carry `sent_bytes`.
MAX_TAKEN_BYTES = 16 * 1024 * 1024


def _model(req: Request) -> str:
    return str(req.json().get("model", "x"))


def body_200(make_body: Callable[[Request], bytes], **headers: str) -> Handler:
    async def handler(req: Request, writer: Writer) -> bool:
        return await send_json(writer, 200, make_body(req), **headers)

    return handler


def raw(make_bytes: Callable[[Request], bytes], then: str = "close") -> Handler:
    """Write `make_bytes(req)` as is, then "close", "abort" (reset) or "hang" (until cancelled)."""

    async def handler(req: Request, writer: Writer) -> bool:
        writer.write(make_bytes(req))
        await writer.drain()
        if then == "abort":
            writer.transport.abort()
        elif then == "hang":
            await asyncio.sleep(3600)
        return False

    return handler


def sse(make_events: Callable[[Request], list[bytes]], end: bool = True) -> Handler:
    async def handler(req: Request, writer: Writer) -> bool:
        return await send_sse(writer, make_events(req), end)

    return handler


def good_events(req: Request) -> list[bytes]:
    return good_stream_events(_model(req), ["fine", " answer"])


# -- non-streamed replies --


def garbage_200(rng: random.Random) -> Made:
    junk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
    junk = b"<" + junk  # never valid JSON
    return body_200(lambda req: junk), {"junk": junk[:40].hex()}


def truncated_json_200(rng: random.Random) -> Made:
    full = completion_json("m", "fine answer")
    cut = rng.randrange(1, len(full) - 1)
    return body_200(lambda req: full[:cut]), {"cut": cut}


def no_choices_200(rng: random.Random) -> Made:
    return body_200(lambda req: b'{"id":"x","object":"chat.completion","usage":{}}'), {}


def empty_choices_200(rng: random.Random) -> Made:
    return body_200(lambda req: completion_json(_model(req), "x", choices=[])), {}


def wrong_types_200(rng: random.Random) -> Made:
    variants: list[Any] = [
        {"choices": "all of them"},
        {"choices": [17]},
        {"choices": [{"index": 0, "message": {"content": 123}, "finish_reason": "stop"}]},
        {"choices": [{"index": 0, "message": {"content": ["a", "b"]}, "finish_reason": "stop"}]},
        {"choices": [{"index": 0, "message": "hello", "finish_reason": "stop"}]},
    ]
    pick = rng.randrange(len(variants))
    extra = variants[pick]
    return body_200(lambda req: completion_json(_model(req), "x", **extra)), {"variant": extra}


def huge_usage_200(rng: random.Random) -> Made:
    big = [10**30, -5, 1e308, "many", 2**64]
    value = big[rng.randrange(len(big))]
    usage = {"prompt_tokens": 3, "completion_tokens": value, "total_tokens": value}
    blob = completion_json("m", "fine answer", usage=usage)
    if isinstance(value, int) and abs(value) >= 2**63:  # orjson will not write it: by hand
        blob = blob.replace(b'"completion_tokens":0', b"")
        blob = blob.replace(b'"usage":{', b'"usage":{"completion_tokens":%d,' % value)
    return body_200(lambda req: blob), {"usage": repr(value)}


def error_status_not_json(rng: random.Random) -> Made:
    status = rng.choice([400, 404, 500, 502, 503, 504, 418])
    page = b"<html><body>upstream exploded</body></html>"

    async def handler(req: Request, writer: Writer) -> bool:
        return await send_json(writer, status, page, **{"Content-Type": "text/html"})

    return handler, {"status": status}


def not_http(rng: random.Random) -> Made:
    variants = [
        b"SMTP 220 ready\r\n\r\n",
        b"HTTP/1.1 two hundred OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon in this header\r\n\r\n",
        b"\x00\x01\x02\x03" * 8,
    ]
    pick = rng.randrange(len(variants))
    return raw(lambda req: variants[pick]), {"variant": pick}


def too_many_headers(rng: random.Random) -> Made:
    count = rng.randrange(150, 400)
    extra = {f"X-H{i}": "v" for i in range(count)}
    return body_200(lambda req: completion_json(_model(req), "fine answer"), **extra), {
        "headers": count
    }


def endless_headers(rng: random.Random) -> Made:
    sent = [0]  # bytes the gateway took (checked by the test: see MAX_TAKEN_BYTES)

    async def handler(req: Request, writer: Writer) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nX-Long: ")
        while sent[0] < 64 * 1024 * 1024:  # one header value; then hang
            writer.write(b"a" * 65536)
            await writer.drain()
            sent[0] += 65536
        await asyncio.sleep(3600)
        return False

    return handler, {"sent_bytes": sent}


def content_length_short(rng: random.Random) -> Made:
    full = completion_json("m", "fine answer")
    short = rng.randrange(1, len(full) - 1)

    async def handler(req: Request, writer: Writer) -> bool:
        hdrs = {"Content-Type": "application/json", "Content-Length": str(short)}
        writer.write(head(200, hdrs) + full)
        await writer.drain()
        return True

    return handler, {"content_length": short, "sent": len(full)}


def content_length_long(rng: random.Random) -> Made:
    full = completion_json("m", "fine answer")
    then = rng.choice(["close", "hang"])
    hdrs = {"Content-Type": "application/json", "Content-Length": str(len(full) + 100)}
    return raw(lambda req: head(200, hdrs) + full, then), {"then": then}


def chunked_broken(rng: random.Random) -> Made:
    full = completion_json("m", "fine answer")
    variants = [b"zz\r\n" + full, b"5\r\n" + full, b"%x\r\n%b" % (len(full), full) + b"XX"]
    pick = rng.randrange(len(variants))
    hdrs = {"Content-Type": "application/json", "Transfer-Encoding": "chunked"}
    return raw(lambda req: head(200, hdrs) + variants[pick], "close"), {"variant": pick}


def reset_before_reply(rng: random.Random) -> Made:
    then = rng.choice(["close", "abort"])
    return raw(lambda req: b"", then), {"then": then}


def reset_mid_body(rng: random.Random) -> Made:
    full = completion_json("m", "fine answer")
    cut = rng.randrange(1, len(full) - 1)
    hdrs = {"Content-Type": "application/json", "Content-Length": str(len(full))}
    return raw(lambda req: head(200, hdrs) + full[:cut], "abort"), {"cut": cut}


def huge_body(rng: random.Random) -> Made:
    async def handler(req: Request, writer: Writer) -> bool:
        hdrs = {"Content-Type": "application/json", "Transfer-Encoding": "chunked"}
        writer.write(head(200, hdrs) + chunk(b'{"choices":[{"message":{"content":"'))
        piece = chunk(b"a" * 65536)
        for _ in range(128):  # 8 MiB (twice conftest.MAX_REPLY_BYTES), then a proper end
            writer.write(piece)
            await writer.drain()
        writer.write(chunk(b'"},"finish_reason":"stop"}]}') + b"0\r\n\r\n")
        await writer.drain()
        return False

    return handler, {}


def pause_whole(rng: random.Random) -> Made:
    async def handler(req: Request, writer: Writer) -> bool:
        full = completion_json(_model(req), "fine answer")
        hdrs = {"Content-Type": "application/json", "Content-Length": str(len(full))}
        writer.write(head(200, hdrs) + full[:10])
        await writer.drain()
        await asyncio.sleep(PAUSE_S)
        writer.write(full[10:])
        await writer.drain()
        return False

    return handler, {}


# -- streamed replies --


def sse_malformed(rng: random.Random) -> Made:
    bad = rng.choice([b"data: {not json\n\n", b"data: [1, 2\n\n", b"data:\n\n", b"dta: x\n\n"])

    def events(req: Request) -> list[bytes]:
        m = _model(req)
        return [delta_event(m, "fine"), bad, delta_event(m, None, "stop"), DONE]

    return sse(events), {"bad": bad.decode()}


def sse_error_event(rng: random.Random) -> Made:
    with_done = rng.random() < 0.5
    err = b'data: {"error":{"message":"engine fell over","type":"server_error"}}\n\n'

    def events(req: Request) -> list[bytes]:
        return [delta_event(_model(req), "fine"), err] + ([DONE] if with_done else [])

    return sse(events), {"with_done": with_done}


def sse_no_done(rng: random.Random) -> Made:
    return sse(lambda req: good_events(req)[:-1]), {}


def sse_done_twice(rng: random.Random) -> Made:
    return sse(lambda req: [*good_events(req), DONE]), {}


def sse_after_done(rng: random.Random) -> Made:
    def events(req: Request) -> list[bytes]:
        m = _model(req)
        return [*good_events(req), delta_event(m, " LATE"), delta_event(m, None, "stop"), DONE]

    return sse(events), {}


def sse_huge_chunk(rng: random.Random) -> Made:
    size = rng.randrange(2_000_000, 4_000_000)

    def events(req: Request) -> list[bytes]:
        m = _model(req)
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
        return SSE_HEAD + chunk(delta_event(_model(req), "fine"))

    return raw(data, "abort"), {}


def sse_chunked_broken(rng: random.Random) -> Made:
    def data(req: Request) -> bytes:
        return SSE_HEAD + chunk(delta_event(_model(req), "fine")) + b"nope\r\n"

    return raw(data, "close"), {}


def sse_headers_then_nothing(rng: random.Random) -> Made:
    return raw(lambda req: SSE_HEAD, "hang"), {}


SCENARIOS: list[tuple[str, bool, frozenset[str], Callable[[random.Random], Made]]] = [
    ("garbage_200", False, frozenset({"error"}), garbage_200),
    ("truncated_json_200", False, frozenset({"error"}), truncated_json_200),
    ("no_choices_200", False, frozenset({"error"}), no_choices_200),
    ("empty_choices_200", False, frozenset({"error"}), empty_choices_200),
    ("wrong_types_200", False, frozenset({"error"}), wrong_types_200),
    ("huge_usage_200", False, frozenset({"error"}), huge_usage_200),
    ("error_status_not_json", False, frozenset({"error"}), error_status_not_json),
    ("not_http", False, frozenset({"error"}), not_http),
    ("too_many_headers", False, frozenset({"error"}), too_many_headers),
    ("endless_headers", False, frozenset({"error"}), endless_headers),
    ("content_length_short", False, frozenset({"error"}), content_length_short),
    ("content_length_long", False, frozenset({"error"}), content_length_long),
    ("chunked_broken", False, frozenset({"error"}), chunked_broken),
    ("reset_before_reply", False, frozenset({"error"}), reset_before_reply),
    ("reset_mid_body", False, frozenset({"error"}), reset_mid_body),
    ("huge_body", False, frozenset({"error"}), huge_body),
    ("pause_whole", False, frozenset({"error"}), pause_whole),
    ("error_status_not_json_stream", True, frozenset({"error"}), error_status_not_json),
    ("not_http_stream", True, frozenset({"error"}), not_http),
    ("sse_malformed", True, frozenset({"ok", "stream_error"}), sse_malformed),
    ("sse_error_event", True, frozenset({"stream_error"}), sse_error_event),
    ("sse_no_done", True, frozenset({"stream_error"}), sse_no_done),
    ("sse_done_twice", True, frozenset({"ok"}), sse_done_twice),
    ("sse_after_done", True, frozenset({"ok"}), sse_after_done),
    ("sse_huge_chunk", True, frozenset({"ok"}), sse_huge_chunk),
    ("sse_one_byte_at_a_time", True, frozenset({"ok"}), sse_one_byte_at_a_time),
    ("sse_pause", True, frozenset({"stream_error"}), sse_pause),
    ("sse_reset_after_first", True, frozenset({"stream_error"}), sse_reset_after_first),
    ("sse_chunked_broken", True, frozenset({"stream_error"}), sse_chunked_broken),
    (
        "sse_headers_then_nothing",
        True,
        frozenset({"error", "stream_error"}),
        sse_headers_then_nothing,
    ),
    ("reset_before_reply_stream", True, frozenset({"error"}), reset_before_reply),
]


def dumps(params: dict[str, Any]) -> str:
    return orjson.dumps(params, default=repr).decode()
