"""A real gateway on 127.0.0.1 over an in-process simulated worker, with the semantic cache on,
one embedding model per session, a fake clock for TTLs, and the real `openai` client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from gpu_worker.server import WorkerHandle
from tests.openai_clients import OpenAIClients
from tests.semantic_gateways import MakeGateway, fast_sim, gateway_factory, running_worker

MODEL = "sim-sem"
API_KEYS = {"sk-a": "team-a", "sk-b": "team-b"}
ADMIN_KEY = "adm-secret"


@pytest.fixture
async def worker() -> AsyncIterator[WorkerHandle]:
    async with running_worker(fast_sim(MODEL), MODEL) as handle:
        yield handle


@pytest.fixture
async def make_gateway(
    worker: WorkerHandle, st_model: object, clock: Callable[[], float]
) -> AsyncIterator[MakeGateway]:
    async with gateway_factory(worker.url, st_model, clock, API_KEYS, ADMIN_KEY) as make:
        yield make


@pytest.fixture
async def client() -> AsyncIterator[OpenAIClients]:
    clients = OpenAIClients(api_key="sk-a")
    yield clients
    await clients.close()
