"""LFU: the free block with the fewest uses goes first; ties go to the one released longest ago.

A frequency baseline for the study. Counts live as long as the block is cached (no aging), which
is LFU's known weakness on drifting traffic — kept plain on purpose, as a point of comparison.
"""

from __future__ import annotations

import heapq

from policies.eviction.base import BlockInfo, EvictionPolicy, Key


class LfuPolicy(EvictionPolicy):
    name = "lfu"

    def __init__(self) -> None:
        self._uses: dict[Key, int] = {}  # tracked blocks -> uses since inserted
        self._heap: list[tuple[int, float, int, Key]] = []  # (uses, released at, seq, key)
        self._free_seq: dict[Key, int] = {}
        self._seq = 0

    def insert(self, key: Key, info: BlockInfo, now: float) -> None:
        self._uses[key] = 1
        self._free_seq.pop(key, None)

    def hit(self, key: Key, info: BlockInfo, now: float) -> None:
        self._uses[key] = self._uses.get(key, 0) + 1
        self._free_seq.pop(key, None)

    def release(self, key: Key, now: float) -> None:
        if key not in self._uses:
            return
        self._seq += 1
        self._free_seq[key] = self._seq
        heapq.heappush(self._heap, (self._uses[key], now, self._seq, key))
        if len(self._heap) > 2 * len(self._free_seq) + 1024:  # drop stale entries
            self._heap = [e for e in self._heap if self._free_seq.get(e[3]) == e[2]]
            heapq.heapify(self._heap)

    def evict(self, n: int, now: float) -> list[Key]:
        out: list[Key] = []
        while len(out) < n and self._heap:
            _, _, seq, key = heapq.heappop(self._heap)
            if self._free_seq.get(key) != seq:
                continue
            del self._free_seq[key]
            del self._uses[key]
            out.append(key)
        return out

    def remove(self, key: Key) -> None:
        self._free_seq.pop(key, None)
        self._uses.pop(key, None)

    def num_evictable(self) -> int:
        return len(self._free_seq)
