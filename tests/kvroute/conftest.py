"""Real servers on 127.0.0.1 port 0: simulated workers in-process (`start_worker` over a
`SimEngine`), gateways in-process, the real `openai` client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from config.cost_model import CostModelConfig
from config.gateway import GatewayConfig
from config.loader import build
from config.worker import SimEngineConfig, WorkerConfig
from gateway.keys import FLEET_CACHE
from gateway.server import RunningGateway, start_gateway
from gateway.worker_cache import WorkerCache
from gpu_worker.byte_tokenizer import ByteTokenizer
from gpu_worker.server import WorkerHandle, start_worker
from gpu_worker.sim_engine import SimEngine
from tests.openai_clients import OpenAIClients

MODEL = "sim-llama"
WAIT_S = 10.0  # longest wait for the fleet view to catch up (it normally takes milliseconds)


async def sim_worker(time_scale: float = 0.01, port: int = 0) -> WorkerHandle:
    cfg = WorkerConfig(host="127.0.0.1", port=port, model=MODEL, kv_heartbeat_s=0.5)
    engine_cfg = SimEngineConfig(cost_model=CostModelConfig(time_scale=time_scale))
    tokenizer = ByteTokenizer(cfg.default_system_prompt)
    return await start_worker(SimEngine(engine_cfg, model_id=MODEL, tokenizer=tokenizer), cfg)


def gateway_config(**overrides: Any) -> GatewayConfig:
    base: dict[str, Any] = {
        "port": 0,
        "health": {"interval_s": 30.0, "timeout_s": 2.0},
        "fleet_view": {"stats_interval_s": 0.05, "reconnect_min_s": 0.02, "reconnect_max_s": 0.2},
    }
    return build(base | overrides, GatewayConfig)


class Stack:
    """Workers and gateways of one test, closed at its end."""

    MODEL = MODEL
    WAIT_S = WAIT_S

    def __init__(self) -> None:
        self.workers: list[WorkerHandle] = []
        self.gateways: list[RunningGateway] = []
        self.client = OpenAIClients()

    async def worker(self, time_scale: float = 0.01, port: int = 0) -> WorkerHandle:
        self.workers.append(await sim_worker(time_scale, port))
        return self.workers[-1]

    async def gateway(self, urls: list[str], **overrides: Any) -> RunningGateway:
        self.gateways.append(await start_gateway(gateway_config(**overrides), urls))
        return self.gateways[-1]

    @staticmethod
    def caches(gw: RunningGateway) -> list[WorkerCache]:
        return list(gw.app[FLEET_CACHE].workers.values())

    @staticmethod
    async def held(caches: list[WorkerCache], hashes: list[int]) -> WorkerCache:
        """Wait until one worker's view holds every block of `hashes`; return that worker.
        Whichever worker got the request publishes the blocks: wait on all of them at once."""

        def held() -> bool:
            return any(c.events.match(hashes) == len(hashes) for c in caches)

        waits = [asyncio.create_task(c.wait_until(held, WAIT_S)) for c in caches]
        done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*done)
        return next(c for c in caches if c.events.match(hashes) == len(hashes))

    async def synced(self, gw: RunningGateway) -> None:
        """Wait until every worker's event stream has delivered its snapshot."""
        for cache in self.caches(gw):
            await cache.wait_until(lambda c=cache: c.events.synced, WAIT_S)

    async def close(self) -> None:
        await self.client.close()  # in this test's loop, not a later one's
        for gw in self.gateways:
            await gw.stop()
        for w in self.workers:
            await w.close()


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    s = Stack()
    yield s
    await s.close()
