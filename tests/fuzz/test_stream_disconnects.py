"""Clients that leave streams early, through the gateway (semantic cache on) to the real
tiny-model worker: afterwards the gateway holds no in-flight slot and the worker no KV block.
Then clients that reset their connections at any point, through both gateway variants.

tests/worker/test_streams.py covers disconnects at a worker hit directly (simulated engine) and
tests/gateway/test_failover.py one disconnect through a gateway; this is many of them at once,
seeded, on the torch engine's block manager (shared prefix blocks, ref counts, aborts mid-decode).
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import socket
import struct
import time

import httpx
import openai
import pytest

from gateway.keys import FLEET, METRICS, SEMANTIC
from gateway.server import RunningGateway
from gpu_worker.server import WorkerHandle

from .conftest import API_KEY, SIM_MODEL
from .hit_cases import stored_bodies
from .http_cases import CHAT, Target, dumps
from .probe import count_5xx

SEED = 7
NUM_STREAMS = 36
CONCURRENCY = 6
SETTLE_S = 10.0


def _body(rng: random.Random, i: int) -> tuple[str, dict[str, object]]:
    head = f"shared head {i % 4} " * rng.randint(2, 8)  # prefixes shared across requests
    common: dict[str, object] = {"model": "tiny", "max_tokens": 400, "stream": True}
    if rng.random() < 0.3:
        common["stream_options"] = {"include_usage": True}
    if rng.random() < 0.5:
        return "/v1/chat/completions", common | {
            "messages": [{"role": "user", "content": f"{head} question {i}"}]
        }
    return "/v1/completions", common | {"prompt": f"{head} prompt {i}", "temperature": 0}


async def _leave_after(http: httpx.AsyncClient, url: str, body: dict[str, object], n: int) -> int:
    """Reads `n` SSE events, then closes the connection with the stream still running."""
    seen = 0
    async with http.stream("POST", url, json=body) as response:
        assert response.status_code == 200, await response.aread()
        async for line in response.aiter_lines():
            seen += line.startswith("data: ")
            if seen >= n:
                break
    return seen


def _in_flight(metrics_text: str) -> list[float]:
    return [
        float(line.rsplit(" ", 1)[1])
        for line in metrics_text.splitlines()
        if line.startswith("kvgate_worker_in_flight{")
    ]


async def test_streams_left_after_a_few_chunks_free_everything(
    tiny_gateway: RunningGateway, tiny_worker: WorkerHandle
) -> None:
    rng = random.Random(SEED)
    gate = asyncio.Semaphore(CONCURRENCY)
    async with httpx.AsyncClient(timeout=30) as http:
        before = (await http.get(tiny_worker.url + "/stats")).json()
        assert before["free_blocks"] == before["total_blocks"]

        async def one(i: int) -> int:
            path, body = _body(rng, i)
            async with gate:
                return await _leave_after(http, tiny_gateway.url + path, body, rng.randint(1, 3))

        seen = await asyncio.gather(*(one(i) for i in range(NUM_STREAMS)))
        assert all(n >= 1 for n in seen)

        deadline = time.monotonic() + SETTLE_S
        while True:  # the worker aborts each request on its next step; the gateway at once
            stats = (await http.get(tiny_worker.url + "/stats")).json()
            metrics = (await http.get(tiny_gateway.url + "/metrics")).text
            in_flight = _in_flight(metrics)
            idle = stats["pending_requests"] == 0 and stats["running"] == 0
            if (idle and not any(in_flight)) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.02)

    assert in_flight and not any(in_flight), in_flight
    # The streams were left mid-way (400 tokens each; the random model may end one early).
    left = re.search(r'^kvgate_errors_total\{kind="client_disconnected"\} (\S+)$', metrics, re.M)
    assert left is not None and float(left.group(1)) >= NUM_STREAMS * 3 // 4, metrics
    assert all(w.in_flight == 0 for w in tiny_gateway.app[FLEET].workers)
    assert (stats["running"], stats["waiting"], stats["pending_requests"]) == (0, 0, 0), stats
    # Every block is free again or held only by the prefix cache (evictable, nobody's).
    assert stats["free_blocks"] + stats["cached_blocks"] == before["total_blocks"], stats
    assert sum(tiny_worker.state.engine.block_manager.ref_counts()) == 0

    async with openai.AsyncOpenAI(
        base_url=tiny_gateway.url + "/v1", api_key="unused", max_retries=0, timeout=20
    ) as client:
        reply = await client.completions.create(model="tiny", prompt="after", max_tokens=2)
    assert reply.usage.completion_tokens >= 1


async def test_connections_reset_at_any_point_leave_no_error_and_no_slot(
    sim_gateway: RunningGateway, sim_workers: list[WorkerHandle], caplog: pytest.LogCaptureFixture
) -> None:
    """300 clients that reset their connection after 1..400 bytes of the reply, half of them on
    a streamed cache hit, 30 at a time (so requests wait for dispatch slots and are cancelled
    there too): no error is logged, no 5xx counted, and no slot or request stays held."""
    stored = stored_bodies(Target(model=SIM_MODEL))[CHAT]
    auth = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(timeout=15) as http:
        assert (await http.post(sim_gateway.url + CHAT, json=stored, headers=auth)).is_success
    await sim_gateway.app[SEMANTIC].drain()
    host, port = sim_gateway.url.removeprefix("http://").rsplit(":", 1)

    def request(body: bytes) -> bytes:
        head = (
            f"POST {CHAT} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {API_KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body

    hit = request(dumps(stored | {"stream": True}))

    async def reset(i: int) -> None:
        miss = {"model": SIM_MODEL, "messages": [{"role": "user", "content": f"q {i}"}]}
        data = hit if i % 2 else request(dumps(miss | {"max_tokens": 100, "stream": True}))
        reader, writer = await asyncio.open_connection(host, int(port))
        linger = struct.pack("ii", 1, 0)  # close with a reset
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        writer.write(data)
        await reader.read(1 + (i * 7) % 400)
        writer.transport.abort()

    with caplog.at_level(logging.ERROR):
        for k in range(10):
            await asyncio.gather(*(reset(30 * k + i) for i in range(30)))
        async with httpx.AsyncClient(timeout=15) as http:
            deadline = time.monotonic() + SETTLE_S
            while True:
                metrics = (await http.get(sim_gateway.url + "/metrics")).text
                pending = [(await http.get(w.url + "/stats")).json() for w in sim_workers]
                idle = all(s["pending_requests"] == 0 for s in pending)
                if (idle and not any(_in_flight(metrics))) or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.02)
    assert not any(_in_flight(metrics)) and idle, (metrics, pending)
    assert sim_gateway.app[METRICS].dispatch_waiting._value.get() == 0
    assert count_5xx(metrics) == {}, metrics
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text[:3000]
