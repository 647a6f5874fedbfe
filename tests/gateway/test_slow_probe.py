"""A health probe that times out while the worker's replies keep flowing: slow, not gone.

The upstream here is a small real HTTP server whose `/health` can be made to stall (as a worker's
does when its loop or its box is saturated) while its streamed replies keep coming.
"""

import asyncio
import socket
from collections.abc import AsyncIterator

import httpx
import pytest
from aiohttp import web

from gateway.fleet import FleetView
from gateway.keys import FLEET, METRICS, PROBER
from gateway.metrics import GatewayMetrics
from gateway.server import RunningGateway

MODEL = "sim-llama"
CHUNKS = 40
CHUNK_GAP_S = 0.02
HEALTH_STALL_S = 1.0
PROBE_TIMEOUT_S = 0.2


class StallingWorker:
    def __init__(self) -> None:
        self.stall_health = False
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def health(self, request: web.Request) -> web.Response:
        if self.stall_health:
            await asyncio.sleep(HEALTH_STALL_S)
        return web.json_response({"status": "ok"})

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": MODEL, "object": "model"}]})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for i in range(CHUNKS):
            await response.write(b'data: {"choices": [{"delta": {"content": "x%d"}}]}\n\n' % i)
            await asyncio.sleep(CHUNK_GAP_S)
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/health", self.health)
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/v1/chat/completions", self.chat)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        await web.SockSite(self._runner, sock).start()
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def stalling_worker() -> AsyncIterator[StallingWorker]:
    worker = StallingWorker()
    await worker.start()
    yield worker
    await worker.stop()


async def _stalled_gateway(
    worker: StallingWorker, make_gateway
) -> tuple[RunningGateway, FleetView, GatewayMetrics]:
    """A gateway over `worker`, probed by hand, with the worker's `/health` made to stall."""
    gw = await make_gateway([worker.url], health={"interval_s": 30.0, "timeout_s": PROBE_TIMEOUT_S})
    fleet, metrics = gw.app[FLEET], gw.app[METRICS]
    assert fleet.workers[0].healthy
    worker.stall_health = True
    return gw, fleet, metrics


async def test_probe_timeout_during_a_flowing_stream_keeps_the_worker(
    stalling_worker, make_gateway
):
    gw, fleet, metrics = await _stalled_gateway(stalling_worker, make_gateway)
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    events: list[str] = []
    async with httpx.AsyncClient(timeout=10) as http:
        async with http.stream("POST", gw.url + "/v1/chat/completions", json=body) as response:
            lines = response.aiter_lines()
            async for line in lines:
                if line.startswith("data: "):
                    events.append(line)
                    break
            # The probe stalls past its timeout while chunks keep arriving.
            await gw.app[PROBER].probe_all()
            assert fleet.workers[0].healthy
            async for line in lines:
                if line.startswith("data: "):
                    events.append(line)
    assert events[-1] == "data: [DONE]" and len(events) == CHUNKS + 1
    assert metrics.errors.labels("probe_slow_while_serving")._value.get() == 1


async def test_probe_timeouts_with_nothing_flowing_take_the_worker_out_after_three(
    stalling_worker, make_gateway
):
    gw, fleet, metrics = await _stalled_gateway(stalling_worker, make_gateway)
    for _ in range(2):  # slow, maybe busy: still in (the default unhealthy_after_timeouts: 3)
        await gw.app[PROBER].probe_all()
        assert fleet.workers[0].healthy
    await gw.app[PROBER].probe_all()
    assert not fleet.workers[0].healthy
    assert metrics.errors.labels("probe_timeout")._value.get() == 3
    # It answers in time again: back in rotation.
    stalling_worker.stall_health = False
    await gw.app[PROBER].probe_all()
    assert fleet.workers[0].healthy
