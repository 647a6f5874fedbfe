"""Weighted sum of scorers (llm-d / Dynamo style), highest wins. A baseline.

Each scorer maps a worker to [0, 1] (1 = best) relative to the other candidates:
- prefix: matched fraction of the prompt's cacheable blocks;
- queue: load, min-max normalised across candidates (the least loaded scores 1);
- kv_cache: free fraction of the worker's KV blocks (1 when the worker does not say).
The weights are the part that needs tuning per workload, which is what LMetric avoids.
"""

from __future__ import annotations

from collections.abc import Sequence

from config.routing import WeightedRouting
from policies.routing.base import RequestView, RoutingPolicy, WorkerView
from policies.routing.tie_break import Rotation, argmin_tied


def prefix_score(request: RequestView, worker: WorkerView) -> float:
    if request.num_blocks <= 0:
        return 0.0
    return min(worker.matched_blocks / request.num_blocks, 1.0)


def kv_cache_score(worker: WorkerView) -> float:
    if worker.total_blocks <= 0:
        return 1.0
    return min(max(worker.free_blocks / worker.total_blocks, 0.0), 1.0)


class WeightedPolicy(RoutingPolicy):
    name = "weighted"

    def __init__(self, cfg: WeightedRouting | None = None) -> None:
        self._cfg = cfg or WeightedRouting()
        self._rotation = Rotation()

    def scores(self, request: RequestView, workers: Sequence[WorkerView]) -> list[float]:
        loads = [w.load for w in workers]
        low, high = min(loads), max(loads)
        spread = high - low
        cfg = self._cfg
        return [
            cfg.prefix_weight * prefix_score(request, w)
            + cfg.queue_weight * ((high - w.load) / spread if spread else 1.0)
            + cfg.kv_cache_weight * kv_cache_score(w)
            for w in workers
        ]

    def select(self, request: RequestView, workers: Sequence[WorkerView], now: float) -> int:
        negated = [-s for s in self.scores(request, workers)]
        return self._rotation.pick(argmin_tied(negated), len(workers))
