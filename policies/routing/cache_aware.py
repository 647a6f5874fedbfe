"""Cache-aware with a load-imbalance escape (SGLang-router style). A baseline.

1. Imbalanced fleet (`max_load - min_load > balance_abs_threshold` and
   `max_load > balance_rel_threshold × min_load`): the least loaded worker, locality ignored.
2. Otherwise, when the best matched fraction of the prompt exceeds `cache_threshold`: the worker
   with the longest match.
3. Otherwise: the worker with the most free KV blocks (SGLang: the smallest radix tree), so new
   prefixes land where there is room.
Ties rotate. The escape in (1) throws locality away exactly when the fleet is busy, the
complaint shared/DESIGN.md §5 records.
"""

from __future__ import annotations

from collections.abc import Sequence

from config.routing import CacheAwareRouting
from policies.routing.base import RequestView, RoutingPolicy, WorkerView
from policies.routing.tie_break import Rotation, argmin_tied
from policies.routing.weighted import prefix_score


class CacheAwarePolicy(RoutingPolicy):
    name = "cache_aware"

    def __init__(self, cfg: CacheAwareRouting | None = None) -> None:
        self._cfg = cfg or CacheAwareRouting()
        self._rotation = Rotation()

    def imbalanced(self, workers: Sequence[WorkerView]) -> bool:
        loads = [w.load for w in workers]
        low, high = min(loads), max(loads)
        cfg = self._cfg
        return high - low > cfg.balance_abs_threshold and high > cfg.balance_rel_threshold * low

    def select(self, request: RequestView, workers: Sequence[WorkerView], now: float) -> int:
        if self.imbalanced(workers):
            keys = [float(w.load) for w in workers]
        else:
            matched = [prefix_score(request, w) for w in workers]
            if max(matched) > self._cfg.cache_threshold:
                keys = [-m for m in matched]
            else:
                keys = [-float(w.free_blocks) for w in workers]
        return self._rotation.pick(argmin_tied(keys), len(workers))
