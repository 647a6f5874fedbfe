"""The harness of tests/cancel: real gateways on 127.0.0.1 port 0 over simulated workers
(in-process, so a test can read a worker's pending requests; a subprocess where a test kills
one), raw HTTP clients that hang up at a moment the test chooses, and the checks of the
invariant every cancellation must keep."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

from config.cost_model import CostModelConfig
from config.gateway import GatewayConfig
from config.loader import build
from config.worker import SimEngineConfig, WorkerConfig
from gateway.keys import FLEET, FLEET_CACHE, RELAY, SEMANTIC, UPSTREAM
from gateway.server import RunningGateway, start_gateway
from gpu_worker.byte_tokenizer import ByteTokenizer
from gpu_worker.engine_api import Tokenizer
from gpu_worker.server import WorkerHandle, start_worker
from gpu_worker.sim_engine import SimEngine
from tests.sim_process import SimWorker

MODEL = "sim-cancel"
CHAT = "/v1/chat/completions"
JSON = {"Content-Type": "application/json"}
WAIT_S = 10.0  # longest wait for a condition the test drives (normally milliseconds)


def chat_body(text: str = "hi", max_tokens: int = 4, stream: bool = False, **more: Any) -> bytes:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": text}],
        "max_tokens": max_tokens,
        "stream": stream,
    }
    return orjson.dumps(body | more)


async def until(
    condition: Callable[[], Any], what: str | Callable[[], str], timeout_s: float = WAIT_S
) -> None:
    """Poll `condition` (sync, or returning an awaitable) until it is true; `what` (or what it
    returns, at the time of failing) says what was awaited."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = condition()
        if asyncio.iscoroutine(got):
            got = await got
        if got:
            return
        if time.monotonic() > deadline:
            said = what if isinstance(what, str) else what()
            raise AssertionError(f"not reached in {timeout_s:g} s: {said}")
        await asyncio.sleep(0.005)


class RawClient:
    """One request on its own TCP connection, written by hand, so the test decides the moment the
    client hangs up (`hang_up`: the socket is reset, as a killed client's would be)."""

    def __init__(
        self,
        url: str,
        body: bytes,
        headers: dict[str, str] | None = None,
        path: str = CHAT,
        stall: bool = False,
    ) -> None:
        self._url = url
        self._path = path
        self._stall = stall  # stop reading after the first bytes, with a small receive buffer
        self._body = body
        self._headers = headers or {}
        self._writer: asyncio.StreamWriter | None = None
        self.task = asyncio.create_task(self._run())
        self.first_bytes = asyncio.Event()
        self.head = ""  # the reply's status line and headers, lower case, once it ended

    async def _run(self) -> tuple[int, bytes]:
        host, port = self._url.removeprefix("http://").rsplit(":", 1)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if self._stall:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
        reader, writer = await asyncio.open_connection(sock=sock)
        self._writer = writer
        lines = [
            f"POST {self._path} HTTP/1.1",
            f"Host: {host}:{port}",
            "Content-Type: application/json",
            f"Content-Length: {len(self._body)}",
            "Connection: close",
            *(f"{k}: {v}" for k, v in self._headers.items()),
        ]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + self._body)
        await writer.drain()
        data = bytearray()
        while chunk := await reader.read(65536):
            data += chunk
            self.first_bytes.set()
            if self._stall:
                await asyncio.Event().wait()  # reads no more until `hang_up` cancels it
        writer.close()
        head, _, rest = bytes(data).partition(b"\r\n\r\n")
        self.head = head.decode("latin-1").lower()
        status = int(head.split(b" ", 2)[1]) if head else 0
        return status, rest

    def hang_up(self) -> None:
        """Reset the connection now (SO_LINGER 0): the gateway sees it gone at once."""
        assert self._writer is not None, "not connected yet"
        sock = self._writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._writer.transport.abort()
        self.task.cancel()

    async def connected(self) -> None:
        await until(lambda: self._writer is not None, "client connected")

    async def result(self, timeout_s: float = WAIT_S) -> tuple[int, bytes]:
        return await asyncio.wait_for(self.task, timeout_s)


async def scrape(gw: RunningGateway) -> dict[str, float]:
    """The gateway's /metrics as `name{label=value,...}` -> value."""
    async with httpx.AsyncClient(timeout=WAIT_S) as http:
        text = (await http.get(gw.url + "/metrics")).text
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out


def gauge(metrics: dict[str, float], name: str) -> float:
    return metrics.get(name, 0.0)


async def dispatch_waiting(gw: RunningGateway, count: int) -> None:
    async def check() -> bool:
        return gauge(await scrape(gw), "kvgate_dispatch_waiting") == count

    await until(check, f"{count} requests waiting for a slot")


def _gauges(metrics: dict[str, float]) -> dict[str, float]:
    return {
        k: v
        for k, v in metrics.items()
        if k.startswith(("kvgate_worker_in_flight", "kvgate_dispatch_waiting", "kvgate_tokenize_w"))
    }


def in_flight(metrics: dict[str, float]) -> float:
    return sum(v for k, v in metrics.items() if k.startswith("kvgate_worker_in_flight{"))


class Stack:
    """The workers and gateways of one test, closed at its end."""

    def __init__(self) -> None:
        self.workers: list[WorkerHandle] = []
        self.procs: list[SimWorker] = []
        self.gateways: list[RunningGateway] = []
        self.baseline: set[asyncio.Task[Any]] = set()  # the tasks running once all had started

    async def worker(
        self,
        time_scale: float = 0.5,
        tokenizer: Tokenizer | None = None,
        max_pending_requests: int = 256,
    ) -> WorkerHandle:
        """An in-process sim worker (time_scale 0.5: ~5 ms a decoded token)."""
        cfg = WorkerConfig(
            host="127.0.0.1",
            port=0,
            model=MODEL,
            kv_heartbeat_s=0.5,
            max_pending_requests=max_pending_requests,
        )
        engine_cfg = SimEngineConfig(cost_model=CostModelConfig(time_scale=time_scale))
        tokenizer = tokenizer or ByteTokenizer(cfg.default_system_prompt)
        engine = SimEngine(engine_cfg, model_id=MODEL, tokenizer=tokenizer)
        self.workers.append(await start_worker(engine, cfg))
        return self.workers[-1]

    def process(self, time_scale: float = 0.5) -> SimWorker:
        self.procs.append(SimWorker(time_scale, model=MODEL))
        return self.procs[-1]

    async def gateway(self, urls: list[str], **overrides: Any) -> RunningGateway:
        base: dict[str, Any] = {
            "port": 0,
            "health": {"interval_s": 30.0, "timeout_s": 2.0},
            "routing": {"type": "round_robin"},
            "semantic_cache": {"enabled": False},
            "fleet_view": {"stats_interval_s": 0.05},
            "shutdown_timeout_s": 2.0,  # a test's teardown does not wait for long streams
        }
        opts = overrides.pop("app_options", {})
        cfg = build(base | overrides, GatewayConfig)
        self.gateways.append(await start_gateway(cfg, urls, **opts))
        self.baseline = set(asyncio.all_tasks())
        return self.gateways[-1]

    async def close(self) -> None:
        for gw in self.gateways:
            await gw.stop()
        for w in self.workers:
            await w.close()
        for p in self.procs:
            p.stop()


async def settled(
    gw: RunningGateway,
    workers: Sequence[WorkerHandle] = (),
    baseline: set[asyncio.Task[Any]] | None = None,
) -> None:
    """The invariant after any cancellation: nothing in flight to any worker (the gauge and the
    fleet), no dispatch waiter and no slot handed to nobody, no tokenize ticket outstanding, no
    worker connection slot held,
    no embedding job queued, every in-process worker has dropped its requests, and no task
    started since `baseline` (`Stack.baseline`) is still pending."""

    last: dict[str, float] = {}

    async def clean() -> bool:
        last.update(await scrape(gw))
        return (
            in_flight(last) == 0
            and gauge(last, "kvgate_dispatch_waiting") == 0
            and gauge(last, "kvgate_tokenize_waiting") == 0
        )

    await until(clean, lambda: f"gauges back to 0: {_gauges(last)}")
    assert [w.in_flight for w in gw.app[FLEET].workers] == [0] * len(gw.app[FLEET].workers)
    dispatch = gw.app[RELAY]._dispatch  # noqa: SLF001 - the slots promised to waiters
    assert all(n == 0 for n in dispatch._handed.values()), dispatch._handed  # noqa: SLF001
    queues = dispatch._queues.values()  # noqa: SLF001
    assert not any(entry[2].live for queue in queues for entry in queue)
    assert gw.app[FLEET_CACHE].ahead.waiting == 0
    # Every worker connection slot of the pool is back (a reply closed on every path).
    pool = gw.app[UPSTREAM]._pool  # noqa: SLF001
    assert pool._slots._value == pool._max_connections  # noqa: SLF001
    stage = gw.app.get(SEMANTIC)
    if stage is not None:
        embedder = stage.cache.embedder
        await until(lambda: embedder.queued == 0, "embedding queue empty")
    for w in workers:
        await until(lambda w=w: w.state.num_pending == 0, "worker dropped every request")
    if baseline is not None:
        await until(
            lambda: not leftover_tasks(baseline),
            lambda: f"no task left behind: {leftover_tasks(baseline)}",
        )


# A server's idle keep-alive connection (its task waits for the next request), a stats poll in
# progress and the test's own clients are not left behind; anything else started since the
# baseline and still pending is.
_TRANSIENT = frozenset(("RequestHandler.start", "StatsPoller._poll", "RawClient._run"))


def leftover_tasks(baseline: set[asyncio.Task[Any]]) -> list[str]:
    me = asyncio.current_task()
    return [
        f"{t.get_name()}: {t.get_coro().__qualname__}"
        for t in asyncio.all_tasks()
        if t is not me
        and t not in baseline
        and not t.done()
        and t.get_coro().__qualname__ not in _TRANSIENT
    ]


async def served(gw: RunningGateway, count: int = 1, timeout_s: float = WAIT_S) -> None:
    """`count` fresh requests are answered 200 promptly: nothing holds a slot for nobody."""
    async with httpx.AsyncClient(timeout=timeout_s) as http:
        replies = await asyncio.gather(
            *(
                http.post(gw.url + CHAT, content=chat_body(f"fresh {i}", 2), headers=JSON)
                for i in range(count)
            )
        )
    assert [r.status_code for r in replies] == [200] * count, [r.text for r in replies]
