"""A client that half-closes (shuts down its write side right after a complete request) gets no
reply: aiohttp takes its FIN for a client that is gone (`eof_received` returns None, so asyncio
closes the transport; aiohttp issue #3659). Not ours to change (docs/architecture.md); pinned
here with what is ours: the request is dropped like any client's hang-up, at the gateway and at
the worker, nothing stays in flight, nothing is logged above DEBUG, and both serve on."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import pytest

from tests.cancel.harness import CHAT, Stack, chat_body, served, settled, until

from .server_log import server_errors

LONG_TOKENS = 400  # ~2 s of generation at the sim worker's pace: still running at the FIN


async def half_closed(url: str, body: bytes, fin_when: Callable[[], bool] | None = None) -> bytes:
    """What comes back for a request followed by a FIN (once `fin_when()` holds, if given)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    head = (
        f"POST {CHAT} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    writer.write(head.encode() + body)
    if fin_when is not None:
        await until(fin_when, "the request reached the worker")
    writer.write_eof()
    try:
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("fin", ["at once", "while generating"])
async def test_a_half_closed_request_is_dropped_cleanly(
    stack: Stack, caplog: pytest.LogCaptureFixture, stream: bool, fin: str
):
    caplog.set_level(logging.INFO)
    worker = await stack.worker()
    gw = await stack.gateway([worker.url])
    body = chat_body("half", LONG_TOKENS, stream=stream)
    generating = (lambda: worker.state.num_pending == 1) if fin != "at once" else None
    for url in (gw.url, worker.url):
        reply = await half_closed(url, body, generating)
        if stream and generating is not None:  # what was sent before the FIN, then the cut
            assert b"[DONE]" not in reply and not reply.endswith(b"0\r\n\r\n")
        else:
            assert reply == b""  # closed: no reply at all
        await until(lambda: worker.state.num_pending == 0, "the worker dropped it")
    await settled(gw, [worker], stack.baseline)
    await until(lambda: worker.state.num_pending == 0, "the worker dropped both")
    await served(gw, 2)
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert loud == [], [r.getMessage() for r in loud]


async def test_fins_around_the_first_bytes_never_make_a_500(
    stack: Stack, caplog: pytest.LogCaptureFixture
):
    """A FIN that lands in the loop turn the worker's first chunk arrives in (the handler resumes
    before aiohttp's connection_lost cancels it, on a transport already closing) used to fail
    the stream's head write outside the relay's hang-up handling: an ERROR and a 500 for nobody.
    FINs swept across that moment hit that turn."""
    worker = await stack.worker()
    gw = await stack.gateway([worker.url])
    body = chat_body("what is a monad", 50, stream=True)

    async def one(fin_after_s: float | None) -> bytes:
        """The reply to `body`, with a FIN `fin_after_s` after the request (None: none)."""
        host, port = gw.url.removeprefix("http://").rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        head = (
            f"POST {CHAT} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        writer.write(head.encode() + body)
        try:
            if fin_after_s is None:
                await reader.readexactly(1)
                return b""
            await asyncio.sleep(fin_after_s)
            writer.write_eof()
            return await asyncio.wait_for(reader.read(), 10)
        finally:
            writer.close()

    # One at a time, the FIN swept from 0 to twice the time to the first bytes (measured here,
    # so the sweep holds on a slow or busy box), in 80 steps.
    started = time.monotonic()
    await one(None)
    first_s = time.monotonic() - started
    for i in range(80):
        await one(2 * first_s * i / 80)
    await settled(gw, [worker], stack.baseline)
    errors = server_errors(caplog.records)
    assert errors == []
