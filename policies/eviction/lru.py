"""LRU: the block released longest ago goes first. The baseline every other policy must beat."""

from __future__ import annotations

from collections import OrderedDict

from policies.eviction.base import BlockInfo, EvictionPolicy, Key


class LruPolicy(EvictionPolicy):
    name = "lru"

    def __init__(self) -> None:
        self._free: OrderedDict[Key, None] = OrderedDict()  # released blocks, oldest first

    def insert(self, key: Key, info: BlockInfo, now: float) -> None:
        self._free.pop(key, None)

    def hit(self, key: Key, info: BlockInfo, now: float) -> None:
        self._free.pop(key, None)

    def release(self, key: Key, now: float) -> None:
        self._free[key] = None
        self._free.move_to_end(key)

    def evict(self, n: int, now: float) -> list[Key]:
        out: list[Key] = []
        while len(out) < n and self._free:
            out.append(self._free.popitem(last=False)[0])
        return out

    def remove(self, key: Key) -> None:
        self._free.pop(key, None)

    def num_evictable(self) -> int:
        return len(self._free)
