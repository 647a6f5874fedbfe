"""Requests aiohttp's HTTP parser cannot frame, on the gateway and on the worker: aiohttp answers
its plain-text 400 (no supported way to shape it: gpu_worker/framing_log.py) and closes; the log
gets one WARNING line, no traceback, none of the client's bytes. A body whose chunked framing
breaks once the handler reads it is answered in OpenAI's shape (pure-Python parser) or at the
body timeout (the C parser never tells the body reader: aiohttp's)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys

import orjson
import pytest
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong

from gpu_worker.framing_log import FramingErrorLog, framing_summary
from tests.cancel.harness import CHAT, Stack, chat_body
from tests.sim_process import ROOT

from .framing_probe import broken_chunk
from .server_log import server_errors

BODY = chat_body("hi", 2)
POST = f"POST {CHAT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
SECRET = "s3cret-" * 6000  # a header value over 32 KiB: must not reach the log
CASES = {
    "header line over 32 KiB": f"X-Big: {SECRET}\r\nContent-Length: {len(BODY)}\r\n",
    "200 headers": "".join(f"X-H{i}: v\r\n" for i in range(200))
    + f"Content-Length: {len(BODY)}\r\n",
    "Content-Length not a number": "Content-Length: ab\r\n",
    "two Content-Lengths": f"Content-Length: {len(BODY)}\r\nContent-Length: {len(BODY) + 1}\r\n",
    "bad chunk size": "Transfer-Encoding: chunked\r\n",
}


async def exchange(url: str, raw: bytes) -> bytes:
    """Everything the server sends back before it closes the connection."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(raw)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


async def test_framing_errors_are_one_warning_line(stack: Stack, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.DEBUG)
    worker = await stack.worker()
    gw = await stack.gateway([worker.url])
    for server, url in (("gateway", gw.url), ("worker", worker.url)):
        for name, headers in CASES.items():
            caplog.clear()
            body = b"zz\r\n" + BODY if "chunk" in name else BODY
            reply = await exchange(url, (POST + headers + "\r\n").encode() + body)
            assert reply.startswith(b"HTTP/1.0 400 "), (server, name, reply[:200])
            logged = [r for r in caplog.records if r.name == "aiohttp.server"]
            assert [r.levelname for r in logged] == ["WARNING"], (server, name, logged)
            assert logged[0].exc_info is None
            line = logged[0].getMessage()
            assert "refused with 400" in line and "s3cret" not in line, line
            assert server_errors(caplog.records) == []
        good = (POST + f"Connection: close\r\nContent-Length: {len(BODY)}\r\n\r\n").encode()
        assert (await exchange(url, good + BODY)).startswith(b"HTTP/1.1 200 OK")  # serves on


def test_other_errors_keep_their_traceback(caplog: pytest.LogCaptureFixture):
    log = FramingErrorLog()
    try:
        raise ValueError("a bug of ours")
    except ValueError as exc:
        log.exception("Unhandled exception", exc_info=exc)
    (record,) = caplog.records
    assert record.levelno == logging.ERROR and record.exc_info is not None


@pytest.mark.parametrize(
    ("exc", "summary"),
    [
        (LineTooLong(b"aaaa" * 20, "32768"), "Got more than 32768 bytes"),
        (BadHttpMessage("Invalid character in Content-Length:\n\n  b'Content-Length: ab'"), ""),
        (BadHttpMessage("Too many headers received"), "Too many headers received"),
    ],
)
def test_summary_leaves_the_clients_bytes_out(exc, summary):
    got = framing_summary(exc)
    assert "aaaa" not in got and "b'" not in got
    assert got.startswith(summary or "Invalid character in Content-Length")


async def test_a_chunk_broken_after_the_headers_ends_at_the_body_timeout(stack: Stack):
    """aiohttp's C parser finds the bad chunk size but never tells the body reader (the payload
    stays open), so the handler learns nothing until its body timeout: 408, bounded, in OpenAI's
    shape. Pinned here so a fixed aiohttp shows up (then the pure-Python answer below applies)."""
    worker = await stack.worker()
    gw = await stack.gateway([worker.url], body_read_timeout_s=0.5)
    status, body = await broken_chunk(gw.url)
    assert status == 408 and orjson.loads(body)["error"]["code"] == "body_timeout"


def test_a_chunk_broken_after_the_headers_with_the_pure_python_parser():
    """aiohttp's pure-Python parser (no C extension, or AIOHTTP_NO_EXTENSIONS) raises the framing
    error from the body read itself: both servers answer 400 `unreadable_body` (was a 500)."""
    env = os.environ | {"AIOHTTP_NO_EXTENSIONS": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "tests.edges.framing_probe"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    for server in ("gateway", "worker"):
        assert out[server] == {"status": 400, "code": "unreadable_body"}, out
    assert out["errors"] == []
