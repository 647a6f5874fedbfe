"""What the misbehaving worker answers to a completion, scenario by scenario (seeded).

Each scenario is `(name, stream, allowed, make)`: `make(rng)` returns the completion handler and
the parameters it drew (printed on failure, with the seed, so a reader can reproduce it).
`allowed` lists what the client may see: "ok" (a well-formed reply), "error" (an OpenAI-shaped
error with a 5xx upstream status), "error4xx" (one with the worker's own 4xx), "stream_error" (a
200 stream that ends with an error event and `[DONE]`), "ok_with_junk" (a stream that ends with
`[DONE]` but relays a malformed event). The streamed ones are in stream_scenarios.py.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import json  # stdlib: it writes integers of any size, as a broken worker may
import random
from collections.abc import Callable
from typing import Any

import orjson

from tests.upfuzz.bad_worker import (
    PAUSE_S,
    Made,
    Request,
    Writer,
    body_200,
    chunk,
    completion_json,
    good_events,
    head,
    model_of,
    raw,
    send_json,
)
from tests.upfuzz.stream_scenarios import (
    MALFORMED,
    sse_after_done,
    sse_chunked_broken,
    sse_close_delimited,
    sse_done_twice,
    sse_error_event,
    sse_headers_then_nothing,
    sse_huge_chunk,
    sse_malformed,
    sse_no_done,
    sse_one_byte_at_a_time,
    sse_pause,
    sse_reset_after_first,
    stream_answered_whole,
)

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
    return body_200(lambda req: completion_json(model_of(req), "x", choices=[])), {}


def wrong_types_200(rng: random.Random, pick: int | None = None) -> Made:
    variants: list[Any] = [
        {"choices": "all of them"},
        {"choices": [17]},
        {"choices": [{"index": 0, "message": {"content": 123}, "finish_reason": "stop"}]},
        {"choices": [{"index": 0, "message": {"content": ["a", "b"]}, "finish_reason": "stop"}]},
        {"choices": [{"index": 0, "message": "hello", "finish_reason": "stop"}]},
    ]
    pick = rng.randrange(len(variants)) if pick is None else pick
    extra = variants[pick]
    return body_200(lambda req: completion_json(model_of(req), "x", **extra)), {"variant": extra}


def huge_usage_200(rng: random.Random, pick: int | None = None) -> Made:
    big = [10**30, -5, 1e308, "many", 2**64]
    value = big[rng.randrange(len(big)) if pick is None else pick]
    usage = {"prompt_tokens": 3, "completion_tokens": value, "total_tokens": value}
    blob = json.dumps(orjson.loads(completion_json("m", "fine answer")) | {"usage": usage})
    return body_200(lambda req: blob.encode()), {"usage": repr(value)}


ERROR_STATUSES = [400, 404, 500, 502, 503, 504, 418, 204, 302, 100]


def error_status_not_json(rng: random.Random, pick: int | None = None) -> Made:
    status = ERROR_STATUSES[rng.randrange(len(ERROR_STATUSES)) if pick is None else pick]
    page = b"<html><body>upstream exploded</body></html>"

    async def handler(req: Request, writer: Writer) -> bool:
        return await send_json(writer, status, page, **{"Content-Type": "text/html"})

    return handler, {"status": status}


def not_http(rng: random.Random, pick: int | None = None) -> Made:
    variants = [
        b"SMTP 220 ready\r\n\r\n",
        b"HTTP/1.1 two hundred OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon in this header\r\n\r\n",
        b"\x00\x01\x02\x03" * 8,
    ]
    pick = rng.randrange(len(variants)) if pick is None else pick
    return raw(lambda req: variants[pick]), {"variant": pick}


def too_many_headers(rng: random.Random) -> Made:
    count = rng.randrange(150, 400)
    extra = {f"X-H{i}": "v" for i in range(count)}
    return body_200(lambda req: completion_json(model_of(req), "fine answer"), **extra), {
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


def chunked_broken(rng: random.Random, pick: int | None = None) -> Made:
    full = completion_json("m", "fine answer")
    variants = [b"zz\r\n" + full, b"5\r\n" + full, b"%x\r\n%b" % (len(full), full) + b"XX"]
    pick = rng.randrange(len(variants)) if pick is None else pick
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
        for _ in range(128):  # 8 MiB (twice client_checks.MAX_REPLY_BYTES), then a proper end
            writer.write(piece)
            await writer.drain()
        writer.write(chunk(b'"},"finish_reason":"stop"}]}') + b"0\r\n\r\n")
        await writer.drain()
        return False

    return handler, {}


def pause_whole(rng: random.Random) -> Made:
    async def handler(req: Request, writer: Writer) -> bool:
        full = completion_json(model_of(req), "fine answer")
        hdrs = {"Content-Type": "application/json", "Content-Length": str(len(full))}
        writer.write(head(200, hdrs) + full[:10])
        await writer.drain()
        await asyncio.sleep(PAUSE_S)
        writer.write(full[10:])
        await writer.drain()
        return False

    return handler, {}


def openai_error_status(rng: random.Random, pick: int | None = None) -> Made:
    status = OPENAI_ERROR_STATUSES[
        rng.randrange(len(OPENAI_ERROR_STATUSES)) if pick is None else pick
    ]
    body = b'{"error":{"message":"worker says no","type":"invalid_request_error","code":7}}'

    async def handler(req: Request, writer: Writer) -> bool:
        return await send_json(writer, status, body, **{"Retry-After": "3"})

    return handler, {"status": status}


OPENAI_ERROR_STATUSES = [400, 413, 429, 500, 503, 504]


def gzip_body(rng: random.Random) -> Made:
    async def handler(req: Request, writer: Writer) -> bool:
        packed = gzip.compress(completion_json(model_of(req), "fine answer"))
        return await send_json(writer, 200, packed, **{"Content-Encoding": "gzip"})

    return handler, {}


def both_framings(rng: random.Random) -> Made:
    full = completion_json("m", "fine answer")
    hdrs = {"Content-Length": str(len(full)), "Transfer-Encoding": "chunked"}
    return raw(lambda req: head(200, hdrs) + chunk(full) + b"0\r\n\r\n", "close"), {}


def two_replies(rng: random.Random, pick: int | None = None) -> Made:
    """A whole reply, then a second one nobody asked for, in the same write."""
    second = [
        head(500, {"Content-Length": "5"}) + b"oops!",
        head(200, {"Content-Length": "9"}) + b'{"x": 1}\n',
    ]
    extra = second[rng.randrange(len(second)) if pick is None else pick]

    async def handler(req: Request, writer: Writer) -> bool:
        full = completion_json(model_of(req), "fine answer")
        hdrs = {"Content-Type": "application/json", "Content-Length": str(len(full))}
        writer.write(head(200, hdrs) + full + extra)
        await writer.drain()
        return True

    return handler, {"second": extra.decode()}


ODD_CONTENT_TYPES = [b"text/event-stream\x01", b"text/event-stream; x=\xe9\xff", b"t" * 60_000]


def odd_content_type(rng: random.Random, pick: int | None = None) -> Made:
    """Header values a worker should not send (control bytes, non-ASCII, very long)."""
    value = ODD_CONTENT_TYPES[rng.randrange(len(ODD_CONTENT_TYPES)) if pick is None else pick]

    async def handler(req: Request, writer: Writer) -> bool:
        stream = bool(req.json().get("stream"))
        body = b"".join(good_events(req)) if stream else completion_json(model_of(req), "fine")
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: %b\r\nContent-Length: %d\r\n\r\n%b"
            % (value, len(body), body)
        )
        await writer.drain()
        return True

    return handler, {"content_type": value[:40].decode("latin-1")}


Scenario = tuple[str, bool, frozenset[str], Callable[[random.Random], Made]]


def each(
    name: str, stream: bool, allowed: set[str], make: Callable[..., Made], count: int
) -> list[Scenario]:
    """One scenario per variant of `make` (its `pick`), so every variant runs on every seed."""
    return [
        (f"{name}_{i}", stream, frozenset(allowed), functools.partial(make, pick=i))
        for i in range(count)
    ]


ERROR = {"error"}
SCENARIOS: list[Scenario] = [
    ("garbage_200", False, frozenset(ERROR), garbage_200),
    ("truncated_json_200", False, frozenset(ERROR), truncated_json_200),
    ("no_choices_200", False, frozenset(ERROR), no_choices_200),
    ("empty_choices_200", False, frozenset(ERROR), empty_choices_200),
    *each("wrong_types_200", False, ERROR, wrong_types_200, 5),
    *each("huge_usage_200", False, ERROR, huge_usage_200, 5),
    *each("error_status_not_json", False, ERROR, error_status_not_json, len(ERROR_STATUSES)),
    *each("openai_error_status", False, {"error", "error4xx"}, openai_error_status, 6),
    ("gzip_body", False, frozenset(ERROR), gzip_body),
    *each("two_replies", False, {"ok"}, two_replies, 2),
    *each("odd_content_type", False, {"ok", "error"}, odd_content_type, 3),
    ("both_framings", False, frozenset({"error", "ok"}), both_framings),
    *each("not_http", False, ERROR, not_http, 4),
    ("too_many_headers", False, frozenset(ERROR), too_many_headers),
    ("endless_headers", False, frozenset(ERROR), endless_headers),
    ("content_length_short", False, frozenset(ERROR), content_length_short),
    ("content_length_long", False, frozenset(ERROR), content_length_long),
    *each("chunked_broken", False, ERROR, chunked_broken, 3),
    ("reset_before_reply", False, frozenset(ERROR), reset_before_reply),
    ("reset_mid_body", False, frozenset(ERROR), reset_mid_body),
    ("huge_body", False, frozenset(ERROR), huge_body),
    ("pause_whole", False, frozenset(ERROR), pause_whole),
    ("error_status_not_json_stream", True, frozenset(ERROR), error_status_not_json),
    ("not_http_stream", True, frozenset(ERROR), not_http),
    ("stream_answered_whole", True, frozenset({"stream_error"}), stream_answered_whole),
    *each("odd_content_type_stream", True, {"ok", "error"}, odd_content_type, 3),
    # Events are relayed byte for byte (gateway/relay.py): a malformed one reaches the client.
    *each("sse_malformed", True, {"ok", "ok_with_junk"}, sse_malformed, len(MALFORMED)),
    ("sse_error_event", True, frozenset({"stream_error"}), sse_error_event),
    ("sse_no_done", True, frozenset({"stream_error"}), sse_no_done),
    ("sse_done_twice", True, frozenset({"ok"}), sse_done_twice),
    ("sse_after_done", True, frozenset({"ok"}), sse_after_done),
    ("sse_huge_chunk", True, frozenset({"ok"}), sse_huge_chunk),
    ("sse_one_byte_at_a_time", True, frozenset({"ok"}), sse_one_byte_at_a_time),
    ("sse_close_delimited", True, frozenset({"ok"}), sse_close_delimited),
    ("sse_pause", True, frozenset({"stream_error"}), sse_pause),
    ("sse_reset_after_first", True, frozenset({"stream_error"}), sse_reset_after_first),
    ("sse_chunked_broken", True, frozenset({"stream_error"}), sse_chunked_broken),
    (
        "sse_headers_then_nothing",
        True,
        frozenset({"error", "stream_error"}),
        sse_headers_then_nothing,
    ),
    ("reset_before_reply_stream", True, frozenset(ERROR), reset_before_reply),
]


def dumps(params: dict[str, Any]) -> str:
    return orjson.dumps(params, default=repr).decode()
