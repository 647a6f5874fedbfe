"""WorkerPool (backends/worker_conn.py) against real servers on 127.0.0.1: an aiohttp app for
well-behaved replies, and raw asyncio servers for the ones a library would not write (a body
ended by closing, a pooled connection dropped just as it is reused, a stall)."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from aiohttp import web

from backends.upstream_errors import UpstreamBusy, UpstreamTimeout, UpstreamUnavailable
from backends.worker_conn import WorkerPool
from gateway.keys import FLEET

CHUNKS = 12
BIG_EVENTS = 5000  # ~5 MB: more than loopback socket buffers and the relay's high-water mark
JSON = {"Content-Type": "application/json"}


@pytest.fixture
async def make_pool() -> AsyncIterator[Callable[..., WorkerPool]]:
    """`make_pool(read_timeout_s=..., max_connections=..., connect_timeout_s=...)`, closed after
    the test."""
    pools: list[WorkerPool] = []

    def make(
        read_timeout_s: float = 5.0, max_connections: int = 8, connect_timeout_s: float = 2.0
    ) -> WorkerPool:
        pools.append(WorkerPool(connect_timeout_s, read_timeout_s, max_connections, 30.0))
        return pools[-1]

    yield make
    for pool in pools:
        pool.close()


class App:
    """Streams CHUNKS SSE events (`gap_s` apart) and records each request's client port."""

    def __init__(self) -> None:
        self.peers: list[int] = []
        self.bodies: list[bytes] = []
        self.gap_s = 0.0
        self.url = ""

    async def stream(self, request: web.Request) -> web.StreamResponse:
        self.peers.append(request.transport.get_extra_info("peername")[1])
        self.bodies.append(await request.read())
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for i in range(CHUNKS):
            await response.write(b"data: %d\n\n" % i)
            await asyncio.sleep(self.gap_s)
        await response.write_eof()
        return response

    async def big(self, request: web.Request) -> web.StreamResponse:
        """A chat stream far bigger than any socket buffer, written as fast as it can go."""
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for i in range(BIG_EVENTS):
            await response.write(b"data: %05d%s\n\n" % (i, b"x" * 1000))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def whole(self, request: web.Request) -> web.Response:
        self.peers.append(request.transport.get_extra_info("peername")[1])
        return web.json_response({"ok": True}, status=503, headers={"Retry-After": "3"})


async def _health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _models(request: web.Request) -> web.Response:
    return web.json_response({"data": [{"id": "sim-llama", "object": "model"}]})


@pytest.fixture
async def app() -> AsyncIterator[App]:
    state = App()
    web_app = web.Application()
    web_app.router.add_post("/base/stream", state.stream)
    web_app.router.add_post("/base/whole", state.whole)
    web_app.router.add_post("/v1/chat/completions", state.big)
    for prefix in ("", "/base"):  # a worker at the root, and one under a path prefix
        web_app.router.add_get(prefix + "/health", _health)
        web_app.router.add_get(prefix + "/v1/models", _models)
    web_app.router.add_post("/base/v1/chat/completions", state.stream)
    runner = web.AppRunner(web_app)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    await web.SockSite(runner, sock).start()
    state.url = f"http://127.0.0.1:{sock.getsockname()[1]}/base"
    yield state
    await runner.cleanup()


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> str:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def _read_request(reader: asyncio.StreamReader) -> bool:
    """Read one request (headers and Content-Length body); False at the end of the stream."""
    head = await reader.readuntil(b"\r\n\r\n") if not reader.at_eof() else b""
    if not head:
        return False
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    await reader.readexactly(length)
    return True


def _unchunk(framed: bytes) -> bytes:
    """The body of an HTTP/1.1 chunked message (what a client library would hand over)."""
    body, at = [], 0
    while True:
        end = framed.index(b"\r\n", at)
        size = int(framed[at:end], 16)
        if size == 0:
            return b"".join(body)
        body.append(framed[end + 2 : end + 2 + size])
        assert framed[end + 2 + size : end + 4 + size] == b"\r\n"
        at = end + 4 + size


async def test_pipe_delivers_every_chunk_in_order_and_reuses_the_connection(
    app: App, make_pool
) -> None:
    pool = make_pool()
    for _ in range(2):
        reply = await pool.post(app.url, "/stream", b'{"q": 1}', JSON)
        assert reply.status == 200
        assert reply.content_type == "text/event-stream"
        got: list[bytes] = [await reply.read_chunk()]
        await reply.pipe(got.append)
        reply.close()
        assert b"".join(got) == b"".join(b"data: %d\n\n" % i for i in range(CHUNKS))
    assert app.bodies == [b'{"q": 1}'] * 2
    assert len(app.peers) == 2 and app.peers[0] == app.peers[1]  # kept alive, reused


async def test_a_reply_closed_early_drops_its_connection(app: App, make_pool) -> None:
    app.gap_s = 0.01
    pool = make_pool()
    reply = await pool.post(app.url, "/stream", b"{}", JSON)
    assert await reply.read_chunk()
    reply.close()  # the rest is not wanted: the worker must see the connection go
    reply = await pool.post(app.url, "/stream", b"{}", JSON)
    await reply.read_all()
    reply.close()
    assert app.peers[0] != app.peers[1]


async def test_status_and_headers_of_a_whole_reply(app: App, make_pool) -> None:
    pool = make_pool()
    reply = await pool.post(app.url, "/whole", b"{}", JSON)
    assert (reply.status, reply.retry_after) == (503, "3")
    assert await reply.read_all() == b'{"ok": true}'
    reply.close()


async def test_a_body_ended_by_closing_the_connection(raw_server, make_pool) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nhello, ")
        await writer.drain()
        writer.write(b"world")
        writer.close()

    url = await raw_server(handler)
    pool = make_pool()
    reply = await pool.post(url, "/x", b"{}", JSON)
    assert await reply.read_all() == b"hello, world"
    reply.close()


async def test_a_stale_pooled_connection_is_retried_on_a_new_one(raw_server, make_pool) -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Answers the first request of each connection with keep-alive, then drops the
        # connection when the next request arrives, as a server whose idle timer just fired.
        nonlocal connections
        connections += 1
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await _read_request(reader)
        writer.close()

    url = await raw_server(handler)
    pool = make_pool()
    for _ in range(3):
        reply = await pool.post(url, "/x", b"{}", JSON)
        assert await reply.read_all() == b"ok"
        reply.close()
    assert connections == 3  # two stale connections, each retried once, invisibly


async def test_a_connection_lost_mid_body_is_unavailable(raw_server, make_pool) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        writer.close()

    url = await raw_server(handler)
    pool = make_pool()
    reply = await pool.post(url, "/x", b"{}", JSON)
    with pytest.raises(UpstreamUnavailable):
        await reply.pipe(lambda chunk: None)
    reply.close()


async def test_silence_times_out_but_a_pause_of_our_own_does_not(raw_server, make_pool) -> None:
    release = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await _read_request(reader):
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n")
            await writer.drain()
            await release.wait()  # silent until the test says so
            writer.write(b"1\r\nb\r\n0\r\n\r\n")
            await writer.drain()

    url = await raw_server(handler)
    pool = make_pool(read_timeout_s=0.3)
    # Paused by the caller for longer than the read timeout: no timeout.
    reply = await pool.post(url, "/x", b"{}", JSON)
    got: list[bytes] = []
    reply.pause()
    piped = reply.pipe(got.append)
    await asyncio.sleep(0.8)
    assert not piped.done()
    release.set()
    reply.resume()
    await asyncio.wait_for(piped, 2.0)
    assert b"".join(got) == b"ab"
    reply.close()
    # Silent while we read: a timeout, within about the read timeout.
    release.clear()
    reply = await pool.post(url, "/x", b"{}", JSON)
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(UpstreamTimeout):
        await reply.pipe(lambda chunk: None)
    assert 0.25 <= loop.time() - start < 1.5
    reply.close()
    release.set()


async def test_a_sink_that_raises_ends_the_pipe_with_its_error(app: App, make_pool) -> None:
    app.gap_s = 0.005
    pool = make_pool()
    reply = await pool.post(app.url, "/stream", b"{}", JSON)

    def sink(chunk: bytes) -> None:
        raise ConnectionResetError("client gone")

    await reply.read_chunk()
    with pytest.raises(ConnectionResetError):
        await reply.pipe(sink)
    reply.close()


async def test_refused_is_unavailable_and_gives_the_slot_back(make_pool) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    pool = make_pool(max_connections=1)
    for _ in range(3):  # with one slot, a leaked slot would hang the second try
        with pytest.raises(UpstreamUnavailable):
            await asyncio.wait_for(pool.post(f"http://127.0.0.1:{port}", "/x", b"", JSON), 5)


async def test_a_full_pool_times_out_instead_of_waiting_forever(app: App, make_pool) -> None:
    pool = make_pool(max_connections=1, connect_timeout_s=0.2)
    held = await pool.post(app.url, "/whole", b"{}", JSON)  # the only slot, not closed yet
    with pytest.raises(UpstreamBusy, match="no free worker connection"):
        await pool.post(app.url, "/whole", b"{}", JSON)
    held.close()  # the slot comes back: the next request goes through
    reply = await pool.post(app.url, "/whole", b"{}", JSON)
    assert reply.status == 503
    reply.close()


async def test_header_values_with_line_breaks_are_refused(app: App, make_pool) -> None:
    pool = make_pool()
    with pytest.raises(ValueError):
        await pool.post(app.url, "/whole", b"{}", {"X-Evil": "a\r\nX-Injected: 1"})


async def test_the_gateway_relays_a_stream_to_an_http10_client_too(gateway) -> None:
    """HTTP/1.0 has no chunked framing: the relay falls back to aiohttp's own writer."""
    host, port = gateway.url.removeprefix("http://").split(":")
    body = (
        b'{"model": "sim-llama", "stream": true, "max_tokens": 8,'
        b' "messages": [{"role": "user", "content": "hi"}]}'
    )
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"POST /v1/chat/completions HTTP/1.0\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%b" % (len(body), body)
    )
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 20)  # HTTP/1.0: the reply ends with the socket
    writer.close()
    head, _, text = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200") or head.startswith(b"HTTP/1.1 200")
    assert b"transfer-encoding: chunked" not in head.lower()
    events = [line for line in text.split(b"\n\n") if line.startswith(b"data: ")]
    assert len(events) >= 3 and events[-1] == b"data: [DONE]"


async def _slow_reader(
    gateway_url: str, extra_headers: bytes = b""
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A streamed chat request to the gateway from a socket with a tiny receive buffer, so that
    whatever the client does not read piles up in the gateway."""
    host, port = gateway_url.removeprefix("http://").split(":")
    body = b'{"model": "sim-llama", "stream": true, "messages": [{"role": "user", "content": "x"}]}'
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    sock.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"%bContent-Length: %d\r\n\r\n%b" % (extra_headers, len(body), body)
    )
    await writer.drain()
    return reader, writer


async def test_a_slow_client_gets_the_whole_stream_in_order(app: App, make_gateway) -> None:
    """The client reads nothing for a while (tiny receive buffer): the relay must queue at most
    its high-water mark, stop reading the worker, and resume when the client drains."""
    gw = await make_gateway([app.url.removesuffix("/base")])
    reader, writer = await _slow_reader(gw.url, b"Connection: close\r\n")
    await asyncio.sleep(0.5)  # not reading: the gateway's send buffer fills
    raw = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    head, _, framed = raw.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    text = _unchunk(framed)
    numbers = [int(m) for m in re.findall(rb"data: (\d{5})x", text)]
    assert numbers == list(range(BIG_EVENTS))
    assert b"data: [DONE]" in text


async def test_the_gateway_answers_503_when_its_connections_are_all_in_use(
    app: App, make_gateway
) -> None:
    app.gap_s = 0.05  # one stream holds the only connection for ~0.6 s
    gw = await make_gateway([app.url], upstream={"max_connections": 1, "connect_timeout_s": 0.2})
    body = {"model": "sim-llama", "stream": True, "messages": [{"role": "user", "content": "x"}]}
    async with httpx.AsyncClient(base_url=gw.url, timeout=10) as http:
        async with http.stream("POST", "/v1/chat/completions", json=body) as first:
            assert first.status_code == 200
            second = await http.post("/v1/chat/completions", json=body)
            assert second.status_code == 503
            assert second.headers["Retry-After"] == "1"
            assert second.json()["error"]["code"] == "gateway_busy"
            text = (await first.aread()).decode()
        # The first stream is untouched (this worker sends no `[DONE]`, so the gateway then
        # adds its error event and `[DONE]`).
        assert text.startswith("".join(f"data: {i}\n\n" for i in range(CHUNKS)))
        assert gw.app[FLEET].workers[0].healthy  # and nobody blamed the worker


async def test_a_client_that_reads_nothing_is_dropped_after_the_read_timeout(
    app: App, make_gateway
) -> None:
    gw = await make_gateway([app.url.removesuffix("/base")], upstream={"read_timeout_s": 0.5})
    reader, writer = await _slow_reader(gw.url)
    await asyncio.sleep(2.0)  # reads nothing for four read timeouts
    raw = await asyncio.wait_for(reader.read(), 10)  # what was queued, then the gateway's close
    writer.close()
    assert raw.startswith(b"HTTP/1.1 200")
    assert b"data: [DONE]" not in raw  # dropped mid-stream, not served whole
    assert len(raw) < BIG_EVENTS * 1000  # far from the 5 MB the worker had to send
