"""Real servers on 127.0.0.1: simulated workers as subprocesses (`kvgate sim-worker`, so a test
can kill one), gateways in-process on port 0, and the real `openai` client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from config.gateway import GatewayConfig
from config.loader import build
from gateway.server import RunningGateway, start_gateway
from tests.openai_clients import OpenAIClients
from tests.sim_process import SimWorker

MODEL = "sim-llama"


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
async def openai_client() -> AsyncIterator[OpenAIClients]:
    clients = OpenAIClients()
    yield clients
    await clients.close()
