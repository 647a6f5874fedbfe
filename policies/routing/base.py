"""The routing-policy interface: `select(request, workers, now) -> index into workers`.

The gateway builds the views (a snapshot per request) and calls the policy; the trace simulator
calls the very same objects. Rules:

- `workers` holds only the workers that may take the request (healthy, serving the model); it is
  never empty (the caller answers 503 itself when nobody can take it).
- The policy returns an index into `workers`. It may keep state of its own (a round-robin cursor,
  a seeded RNG for tie-breaking) but does no I/O and reads no clock: `now` is passed in.
- Ties must not pile onto `workers[0]`: break them by rotation or a seeded RNG.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import msgspec


class RequestView(msgspec.Struct, frozen=True, kw_only=True):
    """What a policy may know about the request being routed."""

    num_prompt_tokens: int
    block_size: int = 16
    num_blocks: int = 0  # full blocks of the prompt (the ones that can be cached)
    category: str = ""
    tenant: str = ""
    max_tokens: int = 0


class WorkerView(msgspec.Struct, frozen=True, kw_only=True):
    """One worker as the fleet view sees it when the request arrives."""

    worker_id: str
    running: int = 0  # sequences in the worker's current batch (its batch size)
    waiting: int = 0  # requests queued in the worker
    in_flight: int = 0  # requests the gateway has sent there and not yet seen finish
    queued_prefill_tokens: int = 0  # prompt tokens admitted there and not yet prefilled
    matched_blocks: int = 0  # leading blocks of *this* request the worker holds
    free_blocks: int = 0
    total_blocks: int = 0

    @property
    def load(self) -> int:
        """Requests this worker is busy with, by the freshest count we have."""
        return max(self.in_flight, self.running + self.waiting)


class RoutingPolicy(ABC):
    name: str = ""
    # Whether `select` reads `WorkerView.matched_blocks`: the gateway hashes the prompt only then.
    reads_matched_blocks: bool = True

    @abstractmethod
    def select(self, request: RequestView, workers: Sequence[WorkerView], now: float) -> int: ...
