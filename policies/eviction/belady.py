"""Belady's offline optimum: evict the free block whose next use is farthest in the future.

For studies only — it is handed the future. `future` lists, per key, the ordinal of every request
that will touch it, in order; each `insert`/`hit` of a key consumes that key's next entry (the
current use), so the caller must touch keys in exactly the order of the trace it built `future`
from. A key with no recorded future is never used again and goes first. Among blocks with the same
next use the deepest position goes first: in a prefix cache a child is never used without its
parent, so that order never wastes the parent.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping

from policies.eviction.base import BlockInfo, EvictionPolicy, Key
from policies.eviction.free_heap import FreeHeap


class BeladyPolicy(EvictionPolicy):
    name = "belady"

    def __init__(self, future: Mapping[Key, Iterable[int]] | None = None) -> None:
        self._future: dict[Key, deque[int]] = {k: deque(v) for k, v in (future or {}).items()}
        self._next: dict[Key, float] = {}  # next use of every tracked block
        self._position: dict[Key, int] = {}
        self._free = FreeHeap()  # priority (-next use, -position)

    def _touch(self, key: Key, info: BlockInfo) -> None:
        uses = self._future.get(key)
        if uses:
            uses.popleft()  # this use
        self._next[key] = float(uses[0]) if uses else math.inf
        self._position[key] = info.position
        self._free.discard(key)

    def insert(self, key: Key, info: BlockInfo, now: float) -> None:
        self._touch(key, info)

    def hit(self, key: Key, info: BlockInfo, now: float) -> None:
        self._touch(key, info)

    def release(self, key: Key, now: float) -> None:
        if key not in self._next:
            return
        self._free.push(key, (-self._next[key], -self._position[key]))

    def evict(self, n: int, now: float) -> list[Key]:
        out: list[Key] = []
        while len(out) < n and (key := self._free.pop()) is not None:
            self._forget(key)
            out.append(key)
        return out

    def _forget(self, key: Key) -> None:
        self._next.pop(key, None)
        self._position.pop(key, None)

    def remove(self, key: Key) -> None:
        self._free.discard(key)
        self._forget(key)

    def num_evictable(self) -> int:
        return len(self._free)


def future_uses(accesses: Iterable[Iterable[Key]]) -> dict[Key, list[int]]:
    """`future` for `BeladyPolicy` from the keys each request touches, in request order."""
    out: dict[Key, list[int]] = {}
    for i, keys in enumerate(accesses):
        for k in keys:
            out.setdefault(k, []).append(i)
    return out
