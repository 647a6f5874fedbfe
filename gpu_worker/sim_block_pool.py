"""Block accounting of the simulated engine: how many KV blocks are free, private to a sequence,
or shared cache blocks (keyed by block hash, ref-counted), plus the KV events they produce.

Rules a caller keeps: `ref`/`unref` pair up per sequence and block; a private block is either
freed (`free_private`) or turned into a shared one (`share_private`); `alloc_private` is called
only after `num_available()` said the blocks are there (it evicts released cache blocks first).
"""

from __future__ import annotations

from collections.abc import Iterable

from policies.eviction import BlockInfo, EvictionPolicy


class BlockPool:
    def __init__(self, num_blocks: int, policy: EvictionPolicy) -> None:
        self.num_blocks = num_blocks
        self._policy = policy
        self._refs: dict[int, int] = {}  # cached block hash -> running sequences using it
        self._num_private = 0
        # Net change since the last drain: hash -> True (stored) / False (removed). A store and
        # a remove of the same hash cancel out, so one batch never lists a hash twice.
        self._events: dict[int, bool] = {}

    @property
    def num_free(self) -> int:
        return self.num_blocks - len(self._refs) - self._num_private

    @property
    def num_cached(self) -> int:
        return len(self._refs)

    @property
    def num_private(self) -> int:
        return self._num_private

    def num_referenced(self) -> int:
        return sum(1 for r in self._refs.values() if r > 0)

    def contains(self, h: int) -> bool:
        return h in self._refs

    def num_available(self, exclude: Iterable[int] = ()) -> int:
        """Blocks a new allocation may take: free ones plus evictable cache blocks, less the
        released cache blocks in `exclude` (about to be reused, so not evictable)."""
        reused_free = sum(1 for h in exclude if self._refs.get(h) == 0)
        return self.num_free + self._policy.num_evictable() - reused_free

    def ref(self, h: int, info: BlockInfo, now: float) -> None:
        self._policy.hit(h, info, now)
        self._refs[h] += 1

    def unref(self, h: int, now: float) -> None:
        refs = self._refs[h] - 1
        self._refs[h] = refs
        if refs == 0:
            self._policy.release(h, now)

    def alloc_private(self, n: int, now: float) -> None:
        short = n - self.num_free
        if short > 0:
            for victim in self._policy.evict(short, now):
                del self._refs[victim]  # type: ignore[arg-type]
                self._event(victim, stored=False)  # type: ignore[arg-type]
        if n > self.num_free:
            raise RuntimeError(f"alloc_private({n}) with only {self.num_free} blocks free")
        self._num_private += n

    def free_private(self, n: int) -> None:
        self._num_private -= n

    def share_private(self, h: int, info: BlockInfo, now: float) -> None:
        """A private block now holds the full block `h`: reuse the cached copy when there is one
        (and free the private block), else the block becomes a cache block."""
        self._num_private -= 1
        if h in self._refs:
            self.ref(h, info, now)
            return
        self._refs[h] = 1
        self._policy.insert(h, info, now)
        self._event(h, stored=True)

    def drain_events(self) -> tuple[list[int], list[int]]:
        stored = [h for h, s in self._events.items() if s]
        removed = [h for h, s in self._events.items() if not s]
        self._events.clear()
        return stored, removed

    def held_hashes(self) -> list[int]:
        return list(self._refs)

    def _event(self, h: int, stored: bool) -> None:
        previous = self._events.pop(h, None)
        if previous is None:
            self._events[h] = stored
        # else: the opposite event since the last drain; together they change nothing.
