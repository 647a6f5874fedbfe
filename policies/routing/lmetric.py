"""LMetric: the worker with the lowest `new_prefill_tokens × batch_size` wins.

The product balances KV$ affinity against load without tuned weights: a worker that holds the
prompt's prefix has fewer tokens to prefill, a busy one multiplies that by its batch. Terms:

- new prefill tokens = the prompt tokens not covered by the worker's cached prefix
  (`matched_blocks × block_size`, at least one token is always computed) plus the prefill work
  already queued there (`queued_prefill_tokens`);
- batch size = the requests the worker has in hand (`WorkerView.load`), plus one for the request
  being routed when `count_incoming` is set. Without that `+1` an idle worker scores 0 whatever
  it must recompute, so at moderate load every request goes to whichever worker happens to be
  idle and locality is thrown away (measured in docs/routing.md).

Ties (e.g. several idle workers with no match) rotate; they never pile onto `workers[0]`.
"""

from __future__ import annotations

from collections.abc import Sequence

from config.routing import LMetricRouting
from policies.routing.base import RequestView, RoutingPolicy, WorkerView
from policies.routing.tie_break import Rotation, argmin_tied


def new_prefill_tokens(request: RequestView, worker: WorkerView) -> int:
    """Prompt tokens this worker would compute for the request, plus its queued prefill."""
    cached = min(worker.matched_blocks * request.block_size, request.num_prompt_tokens)
    uncached = max(request.num_prompt_tokens - cached, 1)
    return uncached + worker.queued_prefill_tokens


class LMetricPolicy(RoutingPolicy):
    name = "lmetric"

    def __init__(self, cfg: LMetricRouting | None = None) -> None:
        self._incoming = 1 if (cfg or LMetricRouting()).count_incoming else 0
        self._rotation = Rotation()

    def score(self, request: RequestView, worker: WorkerView) -> int:
        return new_prefill_tokens(request, worker) * (worker.load + self._incoming)

    def select(self, request: RequestView, workers: Sequence[WorkerView], now: float) -> int:
        scores = [self.score(request, w) for w in workers]
        return self._rotation.pick(argmin_tied(scores), len(workers))
