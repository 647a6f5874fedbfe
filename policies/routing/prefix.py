"""Prefix-only: the longest cached prefix wins; ties go to the least loaded, then rotate.

A baseline: it maximises reuse and ignores load until a tie, so one hot prefix makes one
worker a hotspot (docs/routing.md shows it).
"""

from __future__ import annotations

from collections.abc import Sequence

from policies.routing.base import RequestView, RoutingPolicy, WorkerView
from policies.routing.tie_break import Rotation, argmin_tied


class PrefixPolicy(RoutingPolicy):
    name = "prefix"

    def __init__(self) -> None:
        self._rotation = Rotation()

    def select(self, request: RequestView, workers: Sequence[WorkerView], now: float) -> int:
        longest = max(w.matched_blocks for w in workers)
        # Only the longest matches compete; among them the least loaded, then rotation.
        keys = [float("inf") if w.matched_blocks < longest else float(w.load) for w in workers]
        return self._rotation.pick(argmin_tied(keys), len(workers))
