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

Keeping the cached prefix when that makes nobody worse off (third session): after the product
picks a worker, a worker that would compute fewer of this prompt's tokens replaces the pick when
(1) the request's first token comes no later there: under FCFS chunked prefill a request waits
for the prefill queued ahead of it plus its own uncached tokens (`new_prefill_tokens`); and
(2) the requests in hand there are stalled no more in total: its prefill stalls each of them,
`uncached × load`, against the same at the pick. Among those, the one computing the fewest wins.
The product sends a continuation away from its holder when the holder's batch is large, even when
the continuation would wait longer elsewhere and recompute its whole prefix; (1) alone is not
enough (measured: a hot prefix then piles every request onto its holder, whose growing batch
slows every step), (2) keeps that from happening. No weights or thresholds: both comparisons use
the quantities the product is made of. Figures in docs/routing.md.
"""

from __future__ import annotations

from collections.abc import Sequence

from config.routing import LMetricRouting
from policies.routing.base import RequestView, RoutingPolicy, WorkerView
from policies.routing.tie_break import Rotation, argmin_tied


def uncached_tokens(request: RequestView, worker: WorkerView) -> int:
    """Prompt tokens this worker would compute for the request (at least the last one)."""
    cached = min(worker.matched_blocks * request.block_size, request.num_prompt_tokens)
    return max(request.num_prompt_tokens - cached, 1)


def new_prefill_tokens(request: RequestView, worker: WorkerView) -> int:
    """Prompt tokens this worker would compute for the request, plus its queued prefill: under
    FCFS chunked prefill, what the request waits for before its first token there."""
    return uncached_tokens(request, worker) + worker.queued_prefill_tokens


def no_worse_and_cheaper(
    request: RequestView, workers: Sequence[WorkerView], pick: int
) -> list[int]:
    """Workers that compute fewer of the prompt's tokens than `workers[pick]`, where the request's
    first token comes no later (`new_prefill_tokens` no larger) and its prefill stalls the
    requests in hand no more in total (`uncached × load` no larger); ascending."""
    own = uncached_tokens(request, workers[pick])
    wait = new_prefill_tokens(request, workers[pick])
    stall = own * workers[pick].load
    better = []
    for i, w in enumerate(workers):
        uncached = uncached_tokens(request, w)
        if uncached < own and uncached + w.queued_prefill_tokens <= wait:
            if uncached * w.load <= stall:
                better.append(i)
    return better


class LMetricPolicy(RoutingPolicy):
    name = "lmetric"

    def __init__(self, cfg: LMetricRouting | None = None) -> None:
        self._incoming = 1 if (cfg or LMetricRouting()).count_incoming else 0
        self._rotation = Rotation()

    def score(self, request: RequestView, worker: WorkerView) -> int:
        return new_prefill_tokens(request, worker) * (worker.load + self._incoming)

    def keepers(self, request: RequestView, workers: Sequence[WorkerView], pick: int) -> list[int]:
        """The workers that may take the request instead of the product's `pick` (the "keep
        the prefix" step); a subclass in the routing simulation tries other conditions."""
        return no_worse_and_cheaper(request, workers, pick)

    def select(self, request: RequestView, workers: Sequence[WorkerView], now: float) -> int:
        scores = [self.score(request, w) for w in workers]
        pick = self._rotation.pick(argmin_tied(scores), len(workers))
        better = self.keepers(request, workers, pick)
        if not better:
            return pick
        fewest = min(uncached_tokens(request, workers[i]) for i in better)
        better = [i for i in better if uncached_tokens(request, workers[i]) == fewest]
        low = min(scores[i] for i in better)
        return self._rotation.pick([i for i in better if scores[i] == low], len(workers))
