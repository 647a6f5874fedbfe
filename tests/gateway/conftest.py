"""Real servers on 127.0.0.1: simulated workers as subprocesses (`kvgate sim-worker`, so a test
can kill one), gateways in-process on port 0, and the real `openai` client."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from config.gateway import GatewayConfig
from config.loader import build
from gateway.server import RunningGateway, start_gateway

ROOT = Path(__file__).resolve().parents[2]
MODEL = "sim-llama"
URL = re.compile(r"(http://[\w.\-]+:\d+)")
START_TIMEOUT_S = 60.0


class SimWorker:
    """One `kvgate sim-worker` subprocess; `kill()` is a crash, `restart()` comes back on the same
    port."""

    def __init__(self, time_scale: float = 0.01, port: int = 0, *extra_args: str) -> None:
        self.time_scale = time_scale
        self.extra_args = extra_args  # more `kvgate sim-worker` flags
        self.proc = self._spawn(port)

    def _spawn(self, port: int) -> subprocess.Popen[str]:
        argv = [
            sys.executable,
            "-m",
            "kvgate",
            "sim-worker",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--model",
            MODEL,
            "--time-scale",
            str(self.time_scale),
            *self.extra_args,
        ]
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
            env=os.environ | {"PYTHONUNBUFFERED": "1"},
        )
        assert proc.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"sim-worker exited with {proc.wait()}")
            match = URL.search(line)
            if match:
                self.url = match.group(1)
                threading.Thread(target=proc.stdout.read, daemon=True).start()
                return proc
        proc.kill()
        raise RuntimeError("sim-worker printed no URL")

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def restart(self) -> None:
        self.proc = self._spawn(self.port)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="session")
def two_workers() -> Iterator[list[SimWorker]]:
    """Two shared workers; tests that kill a worker start their own (`make_worker`)."""
    workers = [SimWorker(), SimWorker()]
    yield workers
    for w in workers:
        w.stop()


@pytest.fixture
def make_worker() -> Iterator[Callable[..., SimWorker]]:
    """Start-your-own workers, stopped after the test."""
    workers: list[SimWorker] = []

    def make(time_scale: float = 0.01, *extra_args: str) -> SimWorker:
        workers.append(SimWorker(time_scale, 0, *extra_args))
        return workers[-1]

    yield make
    for w in workers:
        w.stop()


def gateway_config(**overrides: Any) -> GatewayConfig:
    # Long health interval: tests drive the probes themselves (`app[PROBER].probe_all()`).
    # round_robin: these tests count requests per worker; KV-aware routing is tested in kvroute/.
    # The semantic cache has its own tests (tests/semwire); here it would answer repeats.
    base: dict[str, Any] = {
        "port": 0,
        "health": {"interval_s": 30.0, "timeout_s": 2.0},
        "routing": {"type": "round_robin"},
        "semantic_cache": {"enabled": False},
    }
    return build(base | overrides, GatewayConfig)


@pytest.fixture
async def make_gateway() -> AsyncIterator[Callable[..., Awaitable[RunningGateway]]]:
    """`await make_gateway(urls, **GatewayConfig fields)`: a gateway on a free port."""
    gateways: list[RunningGateway] = []

    async def make(urls: list[str], **overrides: Any) -> RunningGateway:
        gateways.append(await start_gateway(gateway_config(**overrides), urls))
        return gateways[-1]

    yield make
    for gw in gateways:
        await gw.stop()


@pytest.fixture
async def gateway(two_workers: list[SimWorker], make_gateway) -> RunningGateway:
    return await make_gateway([w.url for w in two_workers])


@pytest.fixture
def openai_client() -> Callable[..., openai.AsyncOpenAI]:
    def make(gw: RunningGateway, api_key: str = "unused") -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=gw.url + "/v1", api_key=api_key, max_retries=0, timeout=20.0
        )

    return make
