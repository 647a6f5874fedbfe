"""Released blocks ordered by a priority (lowest goes first), with lazy invalidation.

A block hit, removed or released again leaves its old heap entry behind; entries carry a sequence
number and only the block's latest one is live, so every operation is O(log n) amortised. The
heap is rebuilt when stale entries outnumber live ones, so it stays bounded.
"""

from __future__ import annotations

import heapq
from typing import Any

from policies.eviction.base import Key


class FreeHeap:
    def __init__(self) -> None:
        self._heap: list[tuple[Any, int, Key]] = []  # (priority, seq, key)
        self._live: dict[Key, int] = {}  # released blocks -> the seq of their live entry
        self._seq = 0

    def __len__(self) -> int:
        return len(self._live)

    def push(self, key: Key, priority: Any) -> None:
        """Make `key` a candidate with `priority` (replacing any earlier entry of it)."""
        self._seq += 1
        self._live[key] = self._seq
        heapq.heappush(self._heap, (priority, self._seq, key))
        if len(self._heap) > 2 * len(self._live) + 1024:
            self._heap = [e for e in self._heap if self._live.get(e[2]) == e[1]]
            heapq.heapify(self._heap)

    def discard(self, key: Key) -> None:
        """`key` is no longer a candidate (hit or removed); no-op when it is not one."""
        self._live.pop(key, None)

    def pop(self) -> Key | None:
        """The live candidate of lowest priority, no longer a candidate; None when empty."""
        while self._heap:
            _, seq, key = heapq.heappop(self._heap)
            if self._live.get(key) == seq:
                del self._live[key]
                return key
        return None
