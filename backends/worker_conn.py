"""Pooled HTTP/1.1 connections for requests to workers, replies handed over as they arrive.

Why not aiohttp's client for this one path: a streamed reply is mostly small chunks, and the
client's per-chunk machinery (stream reader, a future and a task wake-up per chunk, a read timer
re-armed per chunk) was most of the gateway's CPU per request. Here a chunk goes from the
socket, through the HTTP parser, to the caller's callback in one call (`pipe`), with no task in
between: CPU per 64-chunk reply read 0.61 ms against aiohttp's 1.32 ms in the same run
(benchmarks/upstream_client_cost.py). The parser is httptools (llhttp, Node.js's C parser); this
module owns only the pooling, the request bytes and the rules below. Probes, `/stats` and the KV
event streams stay on aiohttp (few, long or cold: nothing to gain).

Rules:
- One request at a time per connection. A connection goes back to the pool only when its reply
  was read to the end and the worker allows keep-alive; any other `close()` drops it, which is
  how a worker learns that nobody wants the rest of a reply.
- `read_timeout_s` is the longest silence while a reply is awaited or read. One timer per
  connection re-arms itself from the time of the last bytes (not a timer per chunk), and it
  does not count time the caller itself paused reading.
- A pooled connection that breaks before any byte of its reply (the worker closed it while it was
  idle) is retried once on a new connection: that is a stale connection, not a failing worker.
- A reply's status line and headers may take `_MAX_HEAD_BYTES`, and `_MAX_HEADERS` headers.
- Unread body bytes wait in a buffer; the socket stops being read while it holds more than
  `_HIGH_WATER_BYTES`, and while a `pipe` consumer has called `pause()`.
- At most `max_connections` requests are in flight; one more waits up to `connect_timeout_s`
  for a free slot, then fails with `UpstreamBusy` (the gateway is full: no worker is to blame).
- Every other failure surfaces as `UpstreamUnavailable` or `UpstreamTimeout` (upstream_errors.py).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit

import httptools

from backends.upstream_errors import (
    ReplyTooLarge,
    UpstreamBusy,
    UpstreamTimeout,
    UpstreamUnavailable,
)

_HIGH_WATER_BYTES = 256 * 1024
_MAX_HEADERS = 100  # a reply with more is not from a worker we should trust
# Longest status line and headers: the parser holds an unfinished header whole (an endless one
# grew the gateway's memory until the read timeout, never ending while bytes kept coming).
_MAX_HEAD_BYTES = 64 * 1024
# Framing headers are this module's to write; a caller's copies are dropped.
_OWN_HEADERS = frozenset(("host", "content-length", "transfer-encoding", "connection"))


_CLOSED_PARSER = httptools.HttpResponseParser(object())  # a closed reply's, never fed


class _Target:
    """Where a base URL's requests go: parsed once per URL."""

    __slots__ = ("host", "host_header", "port", "prefix", "ssl")

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"worker URL {base_url!r}: want http://host[:port][/prefix]")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.host_header = parts.netloc.rsplit("@", 1)[-1]
        self.prefix = parts.path.rstrip("/")
        self.ssl: ssl.SSLContext | None = (
            ssl.create_default_context() if parts.scheme == "https" else None
        )


class _Connection(asyncio.Protocol):
    """One socket to a worker; feeds the bytes of the current reply to its parser."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, read_timeout_s: float, key: tuple[str, int]
    ) -> None:
        self._loop = loop
        self.key = key  # the pool's (host, port)
        self._read_timeout_s = read_timeout_s
        self.transport: asyncio.Transport | None = None
        self.reply: PipedReply | None = None
        self.closed = False
        self.idle_since_s = 0.0
        self.last_bytes_s = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # Requests are small single writes: never hold one back for an ACK (Nagle).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.last_bytes_s = self._loop.time()
        reply = self.reply
        if reply is None:  # bytes nobody asked for: the connection is not usable any more
            self.close()
            return
        reply.feed(data)

    def eof_received(self) -> bool:
        return False  # close; connection_lost tells the reply

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._stop_timer()
        if self.reply is not None:
            self.reply.lost(exc)

    def send(self, reply: PipedReply, data: bytes) -> None:
        self.reply = reply
        self.last_bytes_s = self._loop.time()
        assert self.transport is not None
        self.transport.write(data)
        self._timer = self._loop.call_at(self.last_bytes_s + self._read_timeout_s, self._check)

    def _check(self) -> None:
        """The read timer: fail the reply after `read_timeout_s` of silence not of its making."""
        self._timer = None
        reply = self.reply
        if reply is None or reply.finished:
            return
        now = self._loop.time()
        if reply.paused:
            self.last_bytes_s = now  # the caller's own pause is not the worker's silence
        elif now - self.last_bytes_s >= self._read_timeout_s:
            reply.fail(UpstreamTimeout(f"no reply bytes for {self._read_timeout_s:g} s"))
            self.close()
            return
        self._timer = self._loop.call_at(self.last_bytes_s + self._read_timeout_s, self._check)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def detach(self) -> None:
        """The reply is done with this connection (before it goes back to the pool)."""
        self.reply = None
        self._stop_timer()

    def close(self) -> None:
        self.detach()
        if self.transport is not None:
            self.transport.close()


class PipedReply:
    """A worker's reply: headers first (`head`), then the body by `read_chunk`, `read_all` or
    `pipe`. The caller must `close()` it (done by UpstreamClient's callers)."""

    def __init__(self, conn: _Connection, pool: WorkerPool, reused: bool) -> None:
        self._conn = conn
        self._pool = pool
        self.reused = reused
        self._parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.headers: dict[str, str] = {}
        self._pieces: list[bytes] = []
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self._sink: Callable[[bytes], None] | None = None
        self._piped: asyncio.Future[None] | None = None
        self._head_done = False
        self.got_bytes = False
        self._head_bytes = 0  # bytes fed before the head was complete
        self.complete = False
        self.error: Exception | None = None
        self._keep_alive = False
        self._close_delimited = False
        self._closed = False
        self._paused_by_buffer = False
        self._paused_by_caller = False

    @property
    def retry_after(self) -> str | None:
        return self.headers.get("retry-after")

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "application/json")

    # -- parser callbacks (httptools calls these from `feed`) --

    def on_message_begin(self) -> None:
        if self._head_done:
            # One request, one reply: bytes of another after it (in the same read) must not
            # change this one's status or body; raised here, the connection is dropped.
            raise UpstreamUnavailable("bad HTTP reply from the worker: a second reply")

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(self.headers) >= _MAX_HEADERS:
            # Raised inside the parser: `feed` hands it on as the reply's error, so it must be
            # one of the upstream errors callers handle (a ValueError reached the client as 500).
            raise UpstreamUnavailable(
                f"bad HTTP reply from the worker: over {_MAX_HEADERS} headers"
            )
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
        self._close_delimited = not chunked and "content-length" not in self.headers
        self._head_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        sink = self._sink
        if sink is not None:
            sink(body)
            return
        self._pieces.append(body)
        self._buffered += len(body)
        if self._buffered > _HIGH_WATER_BYTES and not self._paused_by_buffer:
            self._paused_by_buffer = True
            self._update_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self._keep_alive = self._parser.should_keep_alive()
        self._conn.detach()
        self._wake()

    # -- from the connection --

    def feed(self, data: bytes) -> None:
        self.got_bytes = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:  # a `pipe` sink raised
            cause = exc.__context__ if isinstance(exc.__context__, Exception) else exc
            self.fail(cause)
            self._conn.close()
        except httptools.HttpParserError as exc:
            self.fail(UpstreamUnavailable(f"bad HTTP reply from the worker: {exc}"))
            self._conn.close()
            return
        if not self._head_done:
            self._head_bytes += len(data)
            if self._head_bytes > _MAX_HEAD_BYTES:
                self.fail(UpstreamUnavailable(f"a reply head over {_MAX_HEAD_BYTES} bytes"))
                self._conn.close()

    def lost(self, exc: Exception | None) -> None:
        if self.complete or self.error is not None:
            return
        if self._head_done and self._close_delimited and exc is None:
            self.complete = True  # a body without a length ends with the connection
            self._wake()
            return
        self.fail(UpstreamUnavailable(f"connection lost: {exc or 'closed by the worker'}"))

    def fail(self, exc: Exception) -> None:
        if self.error is None and not self.complete:
            self.error = exc
            self._wake()

    # -- the caller's side --

    @property
    def finished(self) -> bool:
        return self.complete or self.error is not None or self._closed

    @property
    def paused(self) -> bool:
        return self._paused_by_buffer or self._paused_by_caller

    async def head(self) -> None:
        """Wait for the reply's status line and headers."""
        while not self._head_done and self.error is None:
            await self._wait()
        if not self._head_done and self.error is not None:
            raise self.error

    async def read_chunk(self) -> bytes:
        """The body bytes that arrived since the last call, waiting for some; b"" at the end."""
        while True:
            if self._pieces:
                pieces, self._pieces, self._buffered = self._pieces, [], 0
                if self._paused_by_buffer:
                    self._paused_by_buffer = False
                    self._update_reading()
                return pieces[0] if len(pieces) == 1 else b"".join(pieces)
            if self.error is not None:
                raise self.error
            if self.complete:
                return b""
            await self._wait()

    async def read_all(self, max_bytes: int | None = None) -> bytes:
        """The rest of the body; `ReplyTooLarge` once it passes `max_bytes` (what was read is
        dropped: a worker that sends more is broken, and holding it all would fill memory)."""
        parts, size = [], 0
        while chunk := await self.read_chunk():
            size += len(chunk)
            if max_bytes is not None and size > max_bytes:
                raise ReplyTooLarge(f"its reply is over {max_bytes} bytes")
            parts.append(chunk)
        return b"".join(parts)

    def pipe(self, sink: Callable[[bytes], None]) -> asyncio.Future[None]:
        """From now on every body piece goes to `sink` as it is parsed, in order (what was buffered
        first). The future resolves at the end of the body, or raises the reply's error (or what
        `sink` raised). `sink` runs inside the socket's callback: it must be quick."""
        piped = self._piped = asyncio.get_running_loop().create_future()
        pieces, self._pieces, self._buffered = self._pieces, [], 0
        try:
            for piece in pieces:
                sink(piece)
        except Exception as exc:  # noqa: BLE001 - handed to the caller through the future
            self.fail(exc)
        self._sink = sink
        if self._paused_by_buffer:
            self._paused_by_buffer = False
            self._update_reading()
        self._wake()
        return piped

    def pause(self) -> None:
        """Stop reading the socket until `resume` (the consumer is full)."""
        self._paused_by_caller = True
        self._update_reading()

    def resume(self) -> None:
        self._paused_by_caller = False
        self._update_reading()

    def close(self) -> None:
        """Give the connection back (whole reply read, keep-alive) or drop it; idempotent."""
        if self._closed:
            return
        self._closed = True
        conn = self._conn
        reusable = self.complete and self._keep_alive and self.error is None and not self.paused
        if reusable and not conn.closed:
            conn.detach()
            self._pool.put_back(conn)
        else:
            conn.close()
        self._pool.release_slot()
        # Break the reference cycles (parser -> reply, sink closure -> reply) here rather than
        # leave one per request to the cyclic GC.
        self._parser = _CLOSED_PARSER
        self._sink = None

    def _update_reading(self) -> None:
        transport = self._conn.transport
        if transport is None or self._conn.closed:
            return
        if self.paused:
            transport.pause_reading()
        else:
            transport.resume_reading()

    async def _wait(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        piped = self._piped
        if piped is not None and not piped.done():
            if self.error is not None:
                piped.set_exception(self.error)
            elif self.complete:
                piped.set_result(None)


class WorkerPool:
    """Keep-alive connections to workers, at most `max_connections` in use at once.
    Make inside a running event loop."""

    def __init__(
        self,
        connect_timeout_s: float,
        read_timeout_s: float,
        max_connections: int,
        keepalive_timeout_s: float,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._connect_timeout_s = connect_timeout_s
        self._read_timeout_s = read_timeout_s
        self._keepalive_timeout_s = keepalive_timeout_s
        self._max_connections = max_connections
        self._slots = asyncio.Semaphore(max_connections)
        self._targets: dict[str, _Target] = {}
        self._idle: dict[tuple[str, int], list[_Connection]] = {}

    async def post(
        self, base_url: str, path: str, body: bytes, headers: Mapping[str, str]
    ) -> PipedReply:
        """Send a POST and wait for the reply's headers; its body is not read yet."""
        target = self._targets.get(base_url)
        if target is None:
            target = self._targets[base_url] = _Target(base_url)
        request = _request_bytes(target, path, body, headers)
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                await self._slots.acquire()
        except TimeoutError as exc:  # the gateway is full, not the worker gone: never a failure
            raise UpstreamBusy(
                f"no free worker connection in {self._connect_timeout_s:g} s"
                f" ({self._max_connections} in use)"
            ) from exc
        try:
            for _ in range(2):
                conn = self._take(target)
                reused = conn is not None
                if conn is None:
                    conn = await self._connect(target)
                reply = PipedReply(conn, self, reused)
                conn.send(reply, request)
                try:
                    await reply.head()
                    return reply
                except UpstreamUnavailable:
                    conn.close()
                    if not reused or reply.got_bytes:
                        raise
                    # a stale pooled connection: once more on a new one
                except BaseException:
                    conn.close()
                    raise
            raise AssertionError("unreachable")
        except BaseException:
            self._slots.release()
            raise

    def put_back(self, conn: _Connection) -> None:
        conn.idle_since_s = self._loop.time()
        self._idle.setdefault(conn.key, []).append(conn)

    def release_slot(self) -> None:
        self._slots.release()

    def close(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()

    def _take(self, target: _Target) -> _Connection | None:
        conns = self._idle.get((target.host, target.port))
        oldest_s = self._loop.time() - self._keepalive_timeout_s
        while conns:
            conn = conns.pop()  # the most recently used: least likely to have been closed
            usable = conn.transport is not None and not conn.transport.is_closing()
            if usable and not conn.closed and conn.idle_since_s >= oldest_s:
                return conn
            conn.close()
        return None

    async def _connect(self, target: _Target) -> _Connection:
        def factory() -> _Connection:
            return _Connection(self._loop, self._read_timeout_s, (target.host, target.port))

        try:
            async with asyncio.timeout(self._connect_timeout_s):
                _, conn = await self._loop.create_connection(
                    factory,
                    target.host,
                    target.port,
                    ssl=target.ssl,
                    server_hostname=target.host if target.ssl else None,
                )
        except TimeoutError as exc:
            raise UpstreamUnavailable(f"connect timeout ({self._connect_timeout_s:g} s)") from exc
        except OSError as exc:
            raise UpstreamUnavailable(f"{type(exc).__name__}: {exc}") from exc
        return conn


def _request_bytes(target: _Target, path: str, body: bytes, headers: Mapping[str, str]) -> bytes:
    lines = [
        f"POST {target.prefix}{path} HTTP/1.1\r\nHost: {target.host_header}\r\n"
        f"Content-Length: {len(body)}\r\n"
    ]
    for name, value in headers.items():
        if name.lower() in _OWN_HEADERS:
            continue
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name or ":" in name:
            raise ValueError(f"header {name!r}: line breaks are not allowed")
        lines.append(f"{name}: {value}\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("utf-8", "surrogateescape") + body
