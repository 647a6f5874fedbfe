"""Least-load: the worker with the fewest requests in hand; ties rotate. A baseline."""

from __future__ import annotations

from collections.abc import Sequence

from policies.routing.base import RequestView, RoutingPolicy, WorkerView


class LeastLoadPolicy(RoutingPolicy):
    name = "least_load"
    reads_matched_blocks = False

    def __init__(self) -> None:
        self._turn = 0

    def select(self, request: RequestView, workers: Sequence[WorkerView], now: float) -> int:
        low = min(w.load for w in workers)
        tied = [i for i, w in enumerate(workers) if w.load == low]
        self._turn += 1
        return tied[self._turn % len(tied)]
