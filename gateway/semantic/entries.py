"""The cache's bookkeeping: entries by slot, by partition, by category and by expiry time.

Owned by one SemanticCache; every method runs on the embedder's executor thread.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from dataclasses import dataclass, field

from policies.semantic.entry_value import EntryStats, least_valuable
from policies.semantic.pair_features import PromptTerms


def text_key(text: str) -> bytes:
    """A digest of the exact text a lookup compares: equal for the identical text only."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


@dataclass(slots=True)
class Entry:
    slot: int
    partition: bytes
    tenant: str
    category: str
    terms: PromptTerms
    reply: object
    created_s: float
    expires_s: float
    seq: int = 0  # unique per insert: tells a stale expiry-heap item from a live one
    hits: int = 0
    text_key: bytes = b""  # digest of the exact compared text (`text_key`)

    def stats(self) -> EntryStats:
        return EntryStats(created_s=self.created_s, expires_s=self.expires_s, hits=self.hits)


class SampledSet:
    """A set with O(1) add, remove and uniform random sampling (swap-remove over a list)."""

    def __init__(self) -> None:
        self._items: list[int] = []
        self._pos: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(list(self._items))

    def add(self, item: int) -> None:
        if item not in self._pos:
            self._pos[item] = len(self._items)
            self._items.append(item)

    def discard(self, item: int) -> None:
        pos = self._pos.pop(item, None)
        if pos is None:
            return
        last = self._items.pop()
        if pos < len(self._items):
            self._items[pos] = last
            self._pos[last] = pos

    def sample(self, k: int, rng: random.Random) -> list[int]:
        if len(self._items) <= k:
            return list(self._items)
        return rng.sample(self._items, k)


@dataclass
class EntryTable:
    sample_size: int
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    by_slot: dict[int, Entry] = field(default_factory=dict)
    by_partition: dict[bytes, set[int]] = field(default_factory=dict)
    by_category: dict[str, SampledSet] = field(default_factory=dict)
    everything: SampledSet = field(default_factory=SampledSet)
    _expiry: list[tuple[float, int, int]] = field(default_factory=list)

    def add(self, entry: Entry) -> None:
        self.by_slot[entry.slot] = entry
        self.by_partition.setdefault(entry.partition, set()).add(entry.slot)
        self.by_category.setdefault(entry.category, SampledSet()).add(entry.slot)
        self.everything.add(entry.slot)
        heapq.heappush(self._expiry, (entry.expires_s, entry.slot, entry.seq))

    def remove(self, slot: int) -> Entry:
        entry = self.by_slot.pop(slot)
        members = self.by_partition[entry.partition]
        members.discard(slot)
        if not members:
            del self.by_partition[entry.partition]
        self.by_category[entry.category].discard(slot)
        self.everything.discard(slot)
        return entry

    def count(self, category: str) -> int:
        members = self.by_category.get(category)
        return len(members) if members is not None else 0

    def expired(self, now: float, limit: int) -> list[int]:
        """Up to `limit` slots whose entries expired by `now` (stale heap items skipped)."""
        slots: list[int] = []
        while self._expiry and self._expiry[0][0] <= now and len(slots) < limit:
            _, slot, seq = heapq.heappop(self._expiry)
            entry = self.by_slot.get(slot)
            if entry is not None and entry.seq == seq:
                slots.append(slot)
        if len(self._expiry) > 4 * len(self.by_slot) + 64:
            self._compact()
        return slots

    def _compact(self) -> None:
        self._expiry = [(e.expires_s, e.slot, e.seq) for e in self.by_slot.values()]
        heapq.heapify(self._expiry)

    def victim(self, category: str | None, now: float) -> int | None:
        """The least valuable of a random sample (of one category, or of all entries)."""
        pool = self.everything if category is None else self.by_category.get(category)
        if pool is None or len(pool) == 0:
            return None
        sample = pool.sample(self.sample_size, self.rng)
        return least_valuable([(s, self.by_slot[s].stats()) for s in sample], now)
