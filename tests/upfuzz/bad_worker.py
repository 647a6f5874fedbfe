"""A worker that misbehaves on purpose: a real server on 127.0.0.1 port 0.

`BadWorker` speaks HTTP by hand over asyncio streams so a scenario can break it anywhere: each
route (`completion`, `health`, `models`, `stats`, `kv_events`) is a handler a test swaps in. A
handler gets the parsed request and the writer, writes what it likes, and returns whether the
connection may serve another request. The defaults answer like a well-behaved worker serving
`BAD_MODEL`, so the gateway takes it into the fleet.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

BAD_MODEL = "bad-model"  # served only by the misbehaving worker
GOOD_MODEL = "good-model"  # served by the good worker (and by the bad one: retries)
MAX_REQUEST_BYTES = 1 << 20


class Request:
    __slots__ = ("body", "headers", "method", "path", "reader")

    def __init__(self, method: str, path: str, headers: dict[str, str], body: bytes) -> None:
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body
        self.reader: asyncio.StreamReader | None = None  # the connection's (to see it close)

    def json(self) -> Any:
        return orjson.loads(self.body)


Writer = asyncio.StreamWriter
Handler = Callable[[Request, Writer], Awaitable[bool]]


def head(status: int, headers: dict[str, str] | None = None, reason: str = "X") -> bytes:
    lines = [f"HTTP/1.1 {status} {reason}\r\n"]
    lines += [f"{k}: {v}\r\n" for k, v in (headers or {}).items()]
    return ("".join(lines) + "\r\n").encode("latin-1")


async def send_json(writer: Writer, status: int, body: bytes, **headers: str) -> bool:
    hdrs = {"Content-Type": "application/json", "Content-Length": str(len(body))} | headers
    writer.write(head(status, hdrs) + body)
    await writer.drain()
    return True


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


async def send_sse(writer: Writer, events: list[bytes], end: bool = True) -> bool:
    """`events` (each a whole SSE event's bytes) in chunked framing, one chunk each."""
    writer.write(head(200, {"Content-Type": "text/event-stream", "Transfer-Encoding": "chunked"}))
    for event in events:
        writer.write(chunk(event))
        await writer.drain()
    if end:
        writer.write(b"0\r\n\r\n")
        await writer.drain()
    return end


def completion_json(model: str, text: str, chat: bool = True, **extra: Any) -> bytes:
    choice: dict[str, Any] = {"index": 0, "finish_reason": "stop"}
    if chat:
        choice["message"] = {"role": "assistant", "content": text}
    else:
        choice["text"] = text
    body = {
        "id": "cmpl-fuzz",
        "object": "chat.completion" if chat else "text_completion",
        "created": 1,
        "model": model,
        "choices": [choice],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    } | extra
    return orjson.dumps(body)


def delta_event(model: str, text: str | None, finish: str | None = None) -> bytes:
    delta = {} if text is None else {"content": text}
    obj = {
        "id": "chatcmpl-fuzz",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + orjson.dumps(obj) + b"\n\n"


DONE = b"data: [DONE]\n\n"


def good_stream_events(model: str, words: list[str]) -> list[bytes]:
    return [delta_event(model, w) for w in words] + [delta_event(model, None, "stop"), DONE]


class BadWorker:
    """See the module doc. `models`: what `/v1/models` lists."""

    def __init__(self, models: tuple[str, ...] = (BAD_MODEL, GOOD_MODEL)) -> None:
        self.models = models
        self.completions = 0  # completion requests received
        self.connections = 0
        self.stats_requests = 0
        self.kv_requests = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.reset()

    def reset(self) -> None:
        """Back to well-behaved on every route."""
        self.completion: Handler = self.good_completion
        self.health: Handler = self.good_health
        self.models_route: Handler = self.good_models
        self.stats: Handler = self.good_stats
        self.kv_events: Handler = self.no_kv_events

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        await self._server.wait_closed()

    # -- well-behaved answers --

    async def good_completion(self, req: Request, writer: Writer) -> bool:
        body = req.json()
        chat = req.path.endswith("/chat/completions")
        if body.get("stream"):
            return await send_sse(writer, good_stream_events(body["model"], ["fine", " answer"]))
        return await send_json(writer, 200, completion_json(body["model"], "fine answer", chat))

    async def good_health(self, req: Request, writer: Writer) -> bool:
        return await send_json(writer, 200, b'{"status":"ok"}')

    async def good_models(self, req: Request, writer: Writer) -> bool:
        data = [{"id": m, "object": "model", "owned_by": "fuzz"} for m in self.models]
        return await send_json(writer, 200, orjson.dumps({"object": "list", "data": data}))

    async def good_stats(self, req: Request, writer: Writer) -> bool:
        stats = {"model": BAD_MODEL, "tokenizer": "byte", "block_size": 16, "total_blocks": 64}
        return await send_json(writer, 200, orjson.dumps(stats | {"free_blocks": 64}))

    async def no_kv_events(self, req: Request, writer: Writer) -> bool:
        return await send_json(writer, 404, b'{"error":{"message":"none"}}')

    # -- the server --

    async def _serve(self, reader: asyncio.StreamReader, writer: Writer) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            while req := await _read_request(reader):
                req.reader = reader
                if req.path.startswith("/v1/completions") or req.path.startswith("/v1/chat"):
                    self.completions += 1
                    handler = self.completion
                else:
                    self.stats_requests += req.path == "/stats"
                    self.kv_requests += req.path == "/kv_events"
                    handler = {
                        "/health": self.health,
                        "/v1/models": self.models_route,
                        "/stats": self.stats,
                        "/kv_events": self.kv_events,
                    }.get(req.path, _not_found)
                if not await handler(req, writer):
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()


async def _not_found(req: Request, writer: Writer) -> bool:
    return await send_json(writer, 404, b'{"error":{"message":"not found"}}')


async def _read_request(reader: asyncio.StreamReader) -> Request | None:
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = raw.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    size = min(int(headers.get("content-length", "0")), MAX_REQUEST_BYTES)
    body = await reader.readexactly(size) if size else b""
    return Request(method, path, headers, body)


# -- pieces the scenarios (scenarios.py, stream_scenarios.py) build replies from --

Made = tuple[Handler, dict[str, Any]]
SSE_HEAD = head(200, {"Content-Type": "text/event-stream", "Transfer-Encoding": "chunked"})
PAUSE_S = 1.5  # past the gateway's read timeout (client_checks.READ_TIMEOUT_S)
# Most bytes the gateway may take of a reply it must give up on (its own bound plus the socket
# buffers): for scenarios whose params carry `sent_bytes`.
MAX_TAKEN_BYTES = 16 * 1024 * 1024


def model_of(req: Request) -> str:
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
    return good_stream_events(model_of(req), ["fine", " answer"])
