"""LFU: the free block with the fewest uses goes first; ties go to the one released longest ago.

A frequency baseline for the study. Counts live as long as the block is cached (no aging), which
is LFU's known weakness on drifting traffic — kept plain on purpose, as a point of comparison.
"""

from __future__ import annotations

from policies.eviction.base import BlockInfo, EvictionPolicy, Key
from policies.eviction.free_heap import FreeHeap


class LfuPolicy(EvictionPolicy):
    name = "lfu"

    def __init__(self) -> None:
        self._uses: dict[Key, int] = {}  # tracked blocks -> uses since inserted
        self._free = FreeHeap()  # priority (uses, released at)

    def insert(self, key: Key, info: BlockInfo, now: float) -> None:
        self._uses[key] = 1
        self._free.discard(key)

    def hit(self, key: Key, info: BlockInfo, now: float) -> None:
        self._uses[key] = self._uses.get(key, 0) + 1
        self._free.discard(key)

    def release(self, key: Key, now: float) -> None:
        if key not in self._uses:
            return
        self._free.push(key, (self._uses[key], now))

    def evict(self, n: int, now: float) -> list[Key]:
        out: list[Key] = []
        while len(out) < n and (key := self._free.pop()) is not None:
            del self._uses[key]
            out.append(key)
        return out

    def remove(self, key: Key) -> None:
        self._free.discard(key)
        self._uses.pop(key, None)

    def num_evictable(self) -> int:
        return len(self._free)
