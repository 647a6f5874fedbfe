"""The whole local stack (`kvgate.yaml`): the gateway section and the workers behind it.

`workers` is a list of tagged entries; `kvgate up` launches the `sim` and `engine` entries as
subprocesses on free ports and connects to the `remote` ones as they are. `kvgate gateway` only
connects (it uses the `remote` entries plus `--worker URL` flags).
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from config.base import Frozen, Tagged
from config.gateway import GatewayConfig

Count = Annotated[int, msgspec.Meta(ge=1, le=64)]


class SimWorkers(Tagged, tag="sim"):
    """`count` simulated workers (cost model, no model weights): replies of filler tokens whose
    timing follows the cost model; for load tests and development without a model."""

    count: Count = 2
    model: str = "sim-llama"
    # Multiplies every modelled duration: 1.0 = an 8B model on an A100, 0.01 = 100× faster.
    time_scale: Annotated[float, msgspec.Meta(ge=0, le=1e6)] = 0.05  # finite: a sleep of inf raises
    args: list[str] = msgspec.field(default_factory=list)  # more `kvgate sim-worker` flags


class EngineWorkers(Tagged, tag="engine"):
    """`count` workers running our torch engine on `device`."""

    count: Count = 1
    model: str = "smollm2"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    args: list[str] = msgspec.field(default_factory=list)  # more `kvgate worker` flags


class RemoteWorker(Tagged, tag="remote"):
    """An OpenAI-compatible worker that runs elsewhere (ours, vLLM, ...): connect, never launch."""

    url: str  # base URL without /v1, e.g. http://10.0.0.7:8001


WorkerSpec = SimWorkers | EngineWorkers | RemoteWorker


class KvgateConfig(Frozen):
    gateway: GatewayConfig = GatewayConfig()
    workers: list[WorkerSpec] = msgspec.field(default_factory=lambda: [SimWorkers()])
    # Longest wait for a launched worker to print its URL and answer /health.
    worker_startup_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=1e9)] = 120.0
