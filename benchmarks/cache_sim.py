"""Replay requests through one prefix cache of fixed capacity driven by an `EvictionPolicy`.

It calls the policy exactly as the engine's block manager does: each prompt block is hit (if
cached) or inserted (after `evict` made room), and all of the request's blocks are released,
tail first, once it is done. Requests are served one at a time at their arrival time (no
concurrency: a request's blocks are released before the next request arrives).

Prefix hit ratio: a block counts as a hit only while every earlier block of the request hit too —
a cached block whose parent is gone is recomputed, so it is a miss (it is still *touched*, so the
policy learns it was wanted).

Signals: `BlockInfo` carries what the engine knows (position, prompt length, parent, time) and
the derived category; turn and conversation only when `gateway_signals` is on.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from benchmarks.mooncake_trace import TraceRequest
from policies.eviction.base import BlockInfo, EvictionPolicy


@dataclass(frozen=True, slots=True)
class SimResult:
    hit_blocks: int
    total_blocks: int
    evictions: int
    uncached_blocks: int  # blocks that could not be cached: everything else was referenced

    @property
    def hit_ratio(self) -> float:
        return self.hit_blocks / self.total_blocks if self.total_blocks else 0.0


def block_infos(r: TraceRequest, gateway_signals: bool) -> list[BlockInfo]:
    n = len(r.hash_ids)
    return [
        BlockInfo(
            category=r.category,
            turn=r.turn if gateway_signals else 0,
            position=j,
            conversation=r.conversation if gateway_signals else None,
            parent=r.hash_ids[j - 1] if j else None,
            prompt_blocks=n,
        )
        for j in range(n)
    ]


class PrefixCacheSim:
    """One cache of `capacity_blocks` blocks. Feed it requests in time order with `serve`."""

    def __init__(
        self, policy: EvictionPolicy, capacity_blocks: int, gateway_signals: bool = True
    ) -> None:
        if capacity_blocks < 1:
            raise ValueError("capacity_blocks must be >= 1")
        self.policy = policy
        self.capacity_blocks = capacity_blocks
        self.gateway_signals = gateway_signals
        self.cached: set[int] = set()
        self.hits = self.total = self.evictions = self.uncached = 0

    def serve(self, r: TraceRequest) -> int:
        """Serve one request; returns its prefix-hit blocks."""
        now = r.time_s
        infos = block_infos(r, self.gateway_signals)
        hit_prefix = 0
        chained = True
        held = [False] * len(r.hash_ids)  # positions this request holds a reference on
        missing: list[int] = []
        for j, h in enumerate(r.hash_ids):
            if h in self.cached:
                self.policy.hit(h, infos[j], now)
                held[j] = True
                if chained:
                    hit_prefix += 1
            else:
                chained = False
                missing.append(j)
        need = len(self.cached) + len(missing) - self.capacity_blocks
        if need > 0:
            victims = self.policy.evict(need, now)
            self.evictions += len(victims)
            self.cached.difference_update(victims)
        room = max(self.capacity_blocks - len(self.cached), 0)
        for j in missing[:room]:  # head first: a tail without its head is useless
            self.policy.insert(r.hash_ids[j], infos[j], now)
            self.cached.add(r.hash_ids[j])
            held[j] = True
        self.uncached += max(len(missing) - room, 0)
        for j in range(len(r.hash_ids) - 1, -1, -1):  # tail first, as the engine frees blocks
            if held[j]:
                self.policy.release(r.hash_ids[j], now)
        self.hits += hit_prefix
        self.total += len(r.hash_ids)
        return hit_prefix

    def result(self) -> SimResult:
        return SimResult(self.hits, self.total, self.evictions, self.uncached)


def simulate(
    requests: Iterable[TraceRequest],
    policy: EvictionPolicy,
    capacity_blocks: int,
    gateway_signals: bool = True,
) -> SimResult:
    sim = PrefixCacheSim(policy, capacity_blocks, gateway_signals)
    for r in requests:
        sim.serve(r)
    return sim.result()
