"""Config of a worker process: its HTTP server (`WorkerConfig`) and the simulated engine
(`SimEngineConfig`). YAML: a `worker:` section and a `sim_engine:` section (see `SimWorkerFile`).
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from config.base import Frozen
from config.cost_model import CostModelConfig
from config.engine import EngineConfig
from config.eviction import EvictionConfig, WorkloadAwareEviction

Positive = Annotated[int, msgspec.Meta(ge=1)]
# Finite, as the gateway's durations (config/gateway.py `PositiveS`): an infinite timeout or
# heartbeat raises inside asyncio / aiohttp instead of stopping start-up with its path.
PositiveFloat = Annotated[float, msgspec.Meta(gt=0, le=1e9)]
Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]  # 0 = any free port


class WorkerConfig(Frozen):
    host: str = "127.0.0.1"
    port: Port = 8100
    # The model id served (`/v1/models`, the `model` a request must name, and the block hashes'
    # `extra`). The sim worker serves this name; the real engine uses its model's id by default.
    model: str = "kvgate-sim"
    # Requests accepted and not finished (waiting + running in the engine, plus those crossing
    # into the engine thread). Beyond it a request is answered 503 at once (no queueing here: the
    # gateway owns the dispatch queue and orders it by deadline).
    max_pending_requests: Positive = 256
    # max_tokens when a request names none (capped by what the context leaves).
    default_max_tokens: Positive = 256
    max_body_bytes: Positive = 16 * 1024 * 1024
    # A request body not all in this long after its headers: 408 and the connection closed.
    body_read_timeout_s: PositiveFloat = 30.0
    # KV event stream: a subscriber more than this many batches behind is disconnected (it
    # reconnects and resyncs from a snapshot) so a slow gateway never makes the worker buffer
    # without bound.
    kv_subscriber_queue: Positive = 1024
    kv_heartbeat_s: PositiveFloat = 5.0  # SSE comment sent when idle, so a dead peer is noticed
    shutdown_timeout_s: PositiveFloat = 5.0
    # The ChatML system line added when a chat request has no system message ("" = none).
    default_system_prompt: str = "You are a helpful assistant."


class SimEngineConfig(Frozen):
    """A cost-model engine: real prefix-cache accounting and batching, no model."""

    num_blocks: Positive = 8192  # KV cache capacity in blocks (8192 × 16 = 131072 tokens)
    block_size: Positive = 16  # tokens per block (the block hashes use the same)
    max_batch_size: Positive = 64  # running sequences at most
    max_tokens_per_step: Positive = 2048  # prefill chunk budget per step (each decode takes 1)
    max_model_len: Annotated[int, msgspec.Meta(ge=2)] = 8192  # prompt + output of one sequence
    cost_model: CostModelConfig = msgspec.field(default_factory=CostModelConfig)
    eviction: EvictionConfig = msgspec.field(default_factory=WorkloadAwareEviction)


class SimWorkerFile(Frozen):
    """The shape of a sim worker's YAML file (`kvgate sim-worker --config FILE`)."""

    worker: WorkerConfig = msgspec.field(default_factory=WorkerConfig)
    sim_engine: SimEngineConfig = msgspec.field(default_factory=SimEngineConfig)


class EngineWorkerFile(Frozen):
    """The shape of a torch-engine worker's YAML file (`kvgate worker --config FILE`)."""

    worker: WorkerConfig = msgspec.field(default_factory=WorkerConfig)
    engine: EngineConfig = msgspec.field(default_factory=EngineConfig)
