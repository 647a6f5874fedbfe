"""The eviction-policy interface shared by the engine's block manager and the trace simulator.

A policy tracks cached blocks by key (the block hash) and picks victims among the *unreferenced*
ones. Rules a caller must keep:

- `insert(key, info, now)` once, when a block enters the cache; it starts referenced.
- `hit(key, info, now)` when a request reuses a cached block; it is referenced again until released.
  A hit on a block that is still referenced (shared by two running requests) is allowed.
- `release(key, now)` when the last reference to a block goes: only now may it be evicted.
- `evict(n, now)` returns up to n victims among released blocks and forgets them; the caller must
  then drop them. `evict(0, now)` is always a no-op. Fewer than n come back when fewer are free.
- `remove(key)` forgets a block dropped for any other reason (no-op for an unknown key).

Victim choice is O(log n) or amortised O(1): caches hold up to millions of blocks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Hashable
from typing import NamedTuple

Key = Hashable


class BlockInfo(NamedTuple):
    """What the policy may know about the request that touched a block (all optional)."""

    category: str = ""
    turn: int = 0  # 0 for a first turn; n for the n-th continuation of a conversation
    position: int = 0  # index of the block in the request's prompt (0 = head)
    conversation: int | None = None  # a conversation id, when the gateway passes one
    parent: Key | None = None  # the key of the block before this one in the prompt (None at head)
    prompt_blocks: int = 0  # how many blocks the request's prompt has (0 = unknown)


class EvictionPolicy(ABC):
    name: str = ""

    @abstractmethod
    def insert(self, key: Key, info: BlockInfo, now: float) -> None: ...

    @abstractmethod
    def hit(self, key: Key, info: BlockInfo, now: float) -> None: ...

    @abstractmethod
    def release(self, key: Key, now: float) -> None: ...

    @abstractmethod
    def evict(self, n: int, now: float) -> list[Key]: ...

    @abstractmethod
    def remove(self, key: Key) -> None: ...

    @abstractmethod
    def num_evictable(self) -> int:
        """How many tracked blocks are released (candidates for `evict`)."""
