"""Focused regressions for what the fuzz found (tests/fuzz/test_http_fuzz.py), one per defect,
each against real servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct

import httpx
import pytest

from config.protocol import HEADER_CACHE_SALT, HEADER_DEADLINE_MS
from gateway.keys import SEMANTIC
from gateway.server import RunningGateway
from gpu_worker.server import WorkerHandle
from policies.block_hash import extra_key

from .conftest import API_KEY, SIM_MODEL
from .hit_cases import stored_bodies
from .http_cases import Target, dumps

CHAT = "/v1/chat/completions"


def _chat(model: str, **fields: object) -> dict[str, object]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 2,
    } | fields


async def _raw_post(url: str, body: bytes, header: bytes) -> tuple[int, bytes]:
    """POST `body` with one extra header line written as given (bytes that are not UTF-8)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    head = (
        f"POST {CHAT} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {API_KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n"
    ).encode()
    try:
        writer.write(head + header + b"\r\n\r\n" + body)
        reply = await asyncio.wait_for(reader.read(), 15)
    finally:
        writer.close()
    status = int(reply.split(b" ", 2)[1])
    return status, reply.partition(b"\r\n\r\n")[2]


async def test_cache_salt_that_is_not_utf8_is_served(sim_gateway: RunningGateway) -> None:
    """Was a 500: the gateway's block hashing encoded the salt header strictly as UTF-8."""
    body = httpx.Request("POST", "http://x", json=_chat(SIM_MODEL)).content
    status, reply = await _raw_post(sim_gateway.url, body, b"x-kvgate-cache-salt: t\xff\xfe")
    assert status == 200, reply
    # Both sides read the header alike (UTF-8, surrogateescape) and fold in its very bytes.
    salt = b"t\xff\xfe".decode("utf-8", "surrogateescape")
    assert extra_key("m", salt) == b"m\x00salt\x00t\xff\xfe"


async def test_long_hint_header_reaches_the_worker(sim_gateway: RunningGateway) -> None:
    """Was aiohttp's plain-text 400 relayed from the worker: the gateway read and passed on a
    20 KB salt header that the worker (8 KiB header limit) could not read."""
    headers = {"Authorization": f"Bearer {API_KEY}", HEADER_CACHE_SALT: "s" * 20_000}
    async with httpx.AsyncClient(timeout=15) as http:
        reply = await http.post(sim_gateway.url + CHAT, json=_chat(SIM_MODEL), headers=headers)
    assert reply.status_code == 200, reply.text


async def test_worker_refuses_a_deadline_no_clock_can_hold(sim_workers: list[WorkerHandle]) -> None:
    """Was a 500 (OverflowError turning 10**400 ms into seconds)."""
    async with httpx.AsyncClient(timeout=15) as http:
        for value in ("9" * 400, str(2**53 + 1)):
            reply = await http.post(
                sim_workers[0].url + CHAT,
                json=_chat(SIM_MODEL),
                headers={HEADER_DEADLINE_MS: value},
            )
            assert reply.status_code == 400, reply.text
            error = reply.json()["error"]
            assert error["param"] == HEADER_DEADLINE_MS and error["code"] == "invalid_header"
            assert len(error["message"]) < 200  # the value is cut, not echoed in full
        ok = await http.post(
            sim_workers[0].url + CHAT, json=_chat(SIM_MODEL), headers={HEADER_DEADLINE_MS: "5000"}
        )
        assert ok.status_code == 200, ok.text


async def test_seed_beyond_64_bits_is_a_400_naming_seed(
    tiny_worker: WorkerHandle, sim_gateway: RunningGateway
) -> None:
    """Was an engine refusal (400 `engine_refused`, no param, a traceback in the worker's log):
    torch seeds a generator from [-2**63, 2**64) only. The gateway refuses it the same way."""
    async with httpx.AsyncClient(timeout=15) as http:
        for seed in (2**64, -(2**63) - 1):
            body = _chat("tiny", seed=seed, temperature=0.7)
            reply = await http.post(tiny_worker.url + CHAT, json=body)
            assert reply.status_code == 400 and reply.json()["error"]["param"] == "seed", reply.text
            body = _chat(SIM_MODEL, seed=seed, temperature=0.7)
            reply = await http.post(
                sim_gateway.url + CHAT, json=body, headers={"Authorization": f"Bearer {API_KEY}"}
            )
            assert reply.status_code == 400 and reply.json()["error"]["param"] == "seed", reply.text
        edge = _chat("tiny", seed=2**64 - 1, temperature=0.7)
        assert (await http.post(tiny_worker.url + CHAT, json=edge)).status_code == 200


async def test_streamed_hit_of_a_body_with_a_number_beyond_a_double(
    sim_gateway: RunningGateway,
) -> None:
    """Was a 500 written after the 200 head of a streamed cache hit (a broken HTTP stream): the
    hit path re-read the body with orjson, which refuses `1e999999` in a field the validator
    skips."""
    stored = stored_bodies(Target(model=SIM_MODEL))[CHAT]
    auth = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(timeout=15) as http:
        assert (await http.post(sim_gateway.url + CHAT, json=stored, headers=auth)).is_success
        await sim_gateway.app[SEMANTIC].drain()
        body = dumps(stored)[:-1] + b', "stream": true, "x_extra": 1e999999}'
        reply = await http.post(sim_gateway.url + CHAT, content=body, headers=auth)
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-kvgate-cache"] == "hit"
    assert reply.text.rstrip().endswith("data: [DONE]")


async def test_worker_body_not_in_its_encoding_closes_without_a_traceback(
    sim_workers: list[WorkerHandle], caplog: pytest.LogCaptureFixture
) -> None:
    """Was a 400 followed by aiohttp draining the rest of the undecodable body after the reply,
    failing again and logging a traceback at ERROR (one per such request) on a kept-alive
    connection. The gateway already ended such a body and closed; the worker now does too."""
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    url = sim_workers[0].url
    with caplog.at_level(logging.ERROR, logger="aiohttp"):
        async with httpx.AsyncClient(timeout=15) as http:
            reply = await http.post(url + CHAT, content=b"{}" * 5000, headers=headers)
            assert reply.status_code == 400 and reply.headers["Connection"] == "close"
            assert reply.json()["error"]["code"] == "unreadable_body"
            assert (await http.post(url + CHAT, json=_chat(SIM_MODEL))).status_code == 200
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


async def test_streams_cut_by_their_client_leave_no_traceback_and_no_request(
    sim_workers: list[WorkerHandle], caplog: pytest.LogCaptureFixture
) -> None:
    """Was one traceback at ERROR ("Error handling request ... Cannot write to closing
    transport") for about one stream in seven whose client reset the connection while the
    worker wrote to it: the gateway does that for every request its cache answers in parallel
    mode. The request was aborted all the same; now it is also quiet."""
    worker = sim_workers[0]
    host, port = worker.url.removeprefix("http://").rsplit(":", 1)
    body = dumps({"model": SIM_MODEL, "prompt": "go on " * 10, "max_tokens": 200, "stream": True})
    head = (
        f"POST /v1/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()

    async def cut(i: int) -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        linger = struct.pack("ii", 1, 0)  # close with a reset, as a dropped connection does
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        writer.write(head + body)
        await reader.read(1 + i % 200)  # somewhere in the head or the first chunks
        writer.transport.abort()

    with caplog.at_level(logging.ERROR):
        for _ in range(10):
            await asyncio.gather(*(cut(i) for i in range(30)))
        async with httpx.AsyncClient(timeout=15) as http:
            for _ in range(500):
                stats = (await http.get(worker.url + "/stats")).json()
                if stats["pending_requests"] == 0 and stats["running"] == 0:
                    break
                await asyncio.sleep(0.01)
    assert stats["pending_requests"] == 0 and stats["running"] == 0, stats
    assert stats["free_blocks"] + stats["cached_blocks"] == stats["total_blocks"], stats
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text[:2000]


async def test_malformed_turn_hint_is_refused_on_a_cache_hit_too(
    sim_gateway: RunningGateway,
) -> None:
    """Was a 200 from the cache for a turn/conversation header that a worker refuses with 400 on
    a miss: the same request was accepted or refused depending on the cache's content."""
    stored = stored_bodies(Target(model=SIM_MODEL))[CHAT]
    auth = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(timeout=15) as http:
        assert (await http.post(sim_gateway.url + CHAT, json=stored, headers=auth)).is_success
        await sim_gateway.app[SEMANTIC].drain()
        again = await http.post(sim_gateway.url + CHAT, json=stored, headers=auth)
        assert again.headers["x-kvgate-cache"] == "hit"
        for header, value in (("x-kvgate-turn", "-2"), ("x-kvgate-conversation", "c1")):
            bad = await http.post(
                sim_gateway.url + CHAT, json=stored, headers=auth | {header: value}
            )
            assert bad.status_code == 400, bad.text
            error = bad.json()["error"]
            assert error["param"] == header and error["code"] == "invalid_header"
