"""Round-robin: each worker in turn, blind to load and cache. A baseline."""

from __future__ import annotations

from collections.abc import Sequence

from policies.routing.base import RequestView, RoutingPolicy, WorkerView


class RoundRobinPolicy(RoutingPolicy):
    name = "round_robin"
    reads_matched_blocks = False

    def __init__(self) -> None:
        self._next = 0

    def select(self, request: RequestView, workers: Sequence[WorkerView], now: float) -> int:
        choice = self._next % len(workers)
        self._next = choice + 1
        return choice
