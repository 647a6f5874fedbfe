"""A real gateway on 127.0.0.1 over an in-process simulated worker, with the semantic cache on,
one embedding model per session, a fake clock for TTLs, and the real `openai` client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from config.cost_model import CostModelConfig
from config.worker import SimEngineConfig, WorkerConfig
from gpu_worker.server import WorkerHandle, start_worker
from gpu_worker.sim_engine import SimEngine
from tests.openai_clients import OpenAIClients
from tests.semantic_gateways import MakeGateway, gateway_factory

MODEL = "sim-sem"
API_KEYS = {"sk-a": "team-a", "sk-b": "team-b"}
ADMIN_KEY = "adm-secret"


@pytest.fixture
async def worker() -> AsyncIterator[WorkerHandle]:
    engine = SimEngine(
        SimEngineConfig(num_blocks=256, cost_model=CostModelConfig(time_scale=0.001)),
        model_id=MODEL,
    )
    handle = await start_worker(engine, WorkerConfig(host="127.0.0.1", port=0, model=MODEL))
    try:
        yield handle
    finally:
        await handle.close()


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
