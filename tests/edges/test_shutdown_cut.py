"""A reply still in progress when the shutdown grace period ends is ended by the gateway with a
reason (gateway/reply_cut.py): a stream with an OpenAI error event and `data: [DONE]`, a whole
reply with 503 `gateway_shutting_down`; the worker drops the request. Real gateway over an
in-process sim worker; raw HTTP for the bytes, the real `openai` client for what an app sees."""

from __future__ import annotations

import asyncio
import time

import openai
import orjson
import pytest

from gateway.server import RunningGateway
from tests.cancel.harness import MODEL, RawClient, Stack, chat_body, until

from .server_log import server_errors

GRACE_S = 1.0


async def stop_later(stack: Stack, gw: RunningGateway) -> asyncio.Task[float]:
    stack.gateways.remove(gw)

    async def stop() -> float:
        started = time.monotonic()
        await asyncio.wait_for(gw.stop(), 4 * GRACE_S + 5)
        return time.monotonic() - started

    return asyncio.create_task(stop())


def events(chunked: bytes) -> list[bytes]:
    """The SSE `data:` payloads of a chunked body (which must end with its last chunk)."""
    assert chunked.endswith(b"0\r\n\r\n"), chunked[-80:]
    body, rest = b"", chunked
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        body, rest = body + rest[:size], rest[size + 2 :]
    return [e[5:].strip() for e in body.split(b"\n\n") if e.startswith(b"data:")]


async def test_a_stream_cut_at_the_end_of_the_grace_period_says_why(
    stack: Stack, caplog: pytest.LogCaptureFixture
):
    worker = await stack.worker()
    gw = await stack.gateway([worker.url], shutdown_timeout_s=GRACE_S)
    streaming = RawClient(gw.url, chat_body("hold", 4000, stream=True))  # ~20 s of stream
    whole = RawClient(gw.url, chat_body("hold too", 4000))
    await asyncio.wait_for(streaming.first_bytes.wait(), 10)
    await until(lambda: worker.state.num_pending == 2, "both requests at the worker")
    stopping = await stop_later(stack, gw)

    status, body = await streaming.result(GRACE_S + 5)
    assert status == 200
    *tokens, error, done = events(body)
    assert tokens and all(b'"choices"' in t for t in tokens)  # the stream so far, as it came
    detail = orjson.loads(error)["error"]
    assert detail["code"] == "gateway_shutting_down" and detail["type"] == "overloaded_error"
    assert set(detail) == {"message", "type", "param", "code"}
    assert done == b"[DONE]"

    status, body = await whole.result(GRACE_S + 5)
    assert status == 503 and "retry-after: 1" in whole.head
    assert orjson.loads(body)["error"]["code"] == "gateway_shutting_down"

    # Cut by the gateway at the grace period, not by aiohttp after waiting it twice.
    assert await stopping < 2 * GRACE_S
    await until(lambda: worker.state.num_pending == 0, "the worker dropped both", 3)
    # One WARNING says what was cut; nothing at ERROR (aiohttp logs one when its own cut meets
    # a handler that is just finishing).
    assert server_errors(caplog.records) == []
    assert any("2 requests still in progress" in r.getMessage() for r in caplog.records)


async def test_the_openai_client_sees_the_reason(stack: Stack):
    worker = await stack.worker()
    gw = await stack.gateway([worker.url], shutdown_timeout_s=GRACE_S)
    client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="none", max_retries=0)
    stream = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "hold"}],
        max_tokens=4000,
        stream=True,
    )
    got = 0
    stopping: asyncio.Task[float] | None = None
    try:
        async for _chunk in stream:
            got += 1
            if stopping is None:
                stopping = await stop_later(stack, gw)
        raise AssertionError("the stream ended without an error")
    except openai.APIError as exc:
        assert "shutting down" in exc.message, exc
        assert not isinstance(exc, openai.APIConnectionError)  # an answer, not a broken pipe
    finally:
        await client.close()
    assert got > 1 and stopping is not None
    await stopping
