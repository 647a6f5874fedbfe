"""What the gateway knows of one worker's prefix cache: the block hashes it holds.

Two kinds, one question (`match(hashes)`: how many leading blocks of a request the worker holds):

- `EventPrefixIndex` is fed by the worker's KV event stream: a snapshot, then batches with
  consecutive sequence numbers. A gap (a dropped or reordered batch) makes `apply` return False:
  the caller must drop the view (`reset`) and resubscribe for a fresh snapshot, so the view is
  never wrong for longer than one reconnect.
- `RoutedPrefixIndex` is for upstreams that publish no events: it remembers the blocks of the
  requests the gateway itself sent there, bounded in size and with an expiry, since the upstream
  evicts on its own schedule and we never hear of it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence


def leading_match(held: set[int] | OrderedDict[int, float], hashes: Sequence[int]) -> int:
    """Length of the longest run of leading `hashes` all present in `held`.

    Chained hashes make a prefix check enough: block i's hash covers blocks 0..i, so a worker
    holding block i's hash holds that whole prefix (if it still has the parents).
    """
    n = 0
    for h in hashes:
        if h not in held:
            break
        n += 1
    return n


class EventPrefixIndex:
    def __init__(self, max_hashes: int = 4_000_000) -> None:
        self._held: set[int] = set()
        self._seq: int | None = None  # None until a snapshot arrives
        self._max_hashes = max_hashes

    @property
    def synced(self) -> bool:
        return self._seq is not None

    def __len__(self) -> int:
        return len(self._held)

    def reset(self) -> None:
        self._held.clear()
        self._seq = None

    def apply(
        self, seq: int, stored: Iterable[int], removed: Iterable[int], snapshot: bool = False
    ) -> bool:
        """Apply one event batch; False means a gap: `reset` and resync from a snapshot."""
        if snapshot:
            self._held = set(stored)
            self._seq = seq
            return self._bounded()
        if self._seq is None or seq != self._seq + 1:
            return False
        self._seq = seq
        self._held.difference_update(removed)
        self._held.update(stored)
        return self._bounded()

    def _bounded(self) -> bool:
        # A worker reporting more hashes than any real cache holds is broken; drop the view.
        if len(self._held) > self._max_hashes:
            self.reset()
            return False
        return True

    def match(self, hashes: Sequence[int]) -> int:
        return leading_match(self._held, hashes) if self._seq is not None else 0


class RoutedPrefixIndex:
    def __init__(self, max_hashes: int = 200_000, ttl_s: float = 600.0) -> None:
        # hash -> last time it was routed, oldest first
        self._seen: OrderedDict[int, float] = OrderedDict()
        self._max_hashes = max_hashes
        self._ttl_s = ttl_s

    def __len__(self) -> int:
        return len(self._seen)

    def reset(self) -> None:
        self._seen.clear()

    def record(self, hashes: Sequence[int], now: float) -> None:
        for h in hashes:
            self._seen[h] = now
            self._seen.move_to_end(h)
        self._expire(now)
        while len(self._seen) > self._max_hashes:
            self._seen.popitem(last=False)

    def _expire(self, now: float) -> None:
        cutoff = now - self._ttl_s
        while self._seen:
            h, t = next(iter(self._seen.items()))
            if t >= cutoff:
                break
            self._seen.popitem(last=False)

    def match(self, hashes: Sequence[int], now: float) -> int:
        self._expire(now)
        return leading_match(self._seen, hashes)
