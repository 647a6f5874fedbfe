"""A real gateway on 127.0.0.1 over an in-process simulated worker that records what it was sent
(the real sim engine, its requests kept), the semantic cache on, and the real `openai` client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from config.cost_model import CostModelConfig
from config.worker import SimEngineConfig
from gpu_worker.engine_api import EngineRequest
from gpu_worker.server import WorkerHandle
from gpu_worker.sim_engine import SimEngine
from tests.openai_clients import OpenAIClients
from tests.semantic_gateways import MakeGateway, gateway_factory, running_worker

MODEL = "sim-verify"
API_KEYS = {"sk-a": "team-a"}
ADMIN_KEY = "adm-secret"


class RecordingSim(SimEngine):
    """The simulated engine, keeping every request it was given (its engine thread appends)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.received: list[EngineRequest] = []

    def add_request(self, request: EngineRequest) -> None:
        self.received.append(request)
        super().add_request(request)

    def last_prediction(self) -> str | None:
        """The last request's prediction as text; None when it carried none."""
        ids = self.received[-1].prediction_token_ids
        return self.tokenizer.decode(ids) if ids else None


@pytest.fixture
def engine() -> RecordingSim:
    return RecordingSim(
        SimEngineConfig(num_blocks=256, cost_model=CostModelConfig(time_scale=0.001)),
        model_id=MODEL,
    )


@pytest.fixture
async def worker(engine: RecordingSim) -> AsyncIterator[WorkerHandle]:
    async with running_worker(engine, MODEL) as handle:
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
