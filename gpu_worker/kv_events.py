"""Fan-out of the engine's KV events to `GET /kv_events` subscribers (event loop only).

The hub keeps its own mirror of the block hashes the engine holds, updated from the same batches
it publishes, so a new subscriber's snapshot and the batches after it are consistent by
construction (no call into the engine thread). Each subscriber has a bounded backlog; one that
falls behind is cut off (`overflowed`) and must reconnect for a fresh snapshot, so a slow
subscriber costs bounded memory and never holds back the others.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable

import msgspec

from config.worker_wire import KvEventBatch


class KvSubscriber:
    def __init__(self) -> None:
        self.backlog: deque[bytes] = deque()
        self.wake = asyncio.Event()
        self.overflowed = False
        self.closed = False


class KvEventHub:
    def __init__(self, held: Iterable[int], max_backlog: int) -> None:
        self._held: set[int] = set(held)
        self._max_backlog = max_backlog
        self._subscribers: set[KvSubscriber] = set()
        self.seq = 0

    @property
    def num_held(self) -> int:
        return len(self._held)

    def publish(self, stored: list[int], removed: list[int]) -> None:
        self._held.difference_update(removed)
        self._held.update(stored)
        self.seq += 1
        data = msgspec.json.encode(KvEventBatch(seq=self.seq, stored=stored, removed=removed))
        for sub in list(self._subscribers):
            if len(sub.backlog) >= self._max_backlog:
                sub.overflowed = True
                self._subscribers.discard(sub)
            else:
                sub.backlog.append(data)
            sub.wake.set()

    def subscribe(self) -> tuple[KvSubscriber, bytes]:
        """A new subscriber and its snapshot event (to send before anything in its backlog)."""
        sub = KvSubscriber()
        self._subscribers.add(sub)
        snapshot = KvEventBatch(seq=self.seq, snapshot=True, stored=sorted(self._held))
        return sub, msgspec.json.encode(snapshot)

    def unsubscribe(self, sub: KvSubscriber) -> None:
        self._subscribers.discard(sub)

    def close(self) -> None:
        for sub in self._subscribers:
            sub.closed = True
            sub.wake.set()
        self._subscribers.clear()

    @property
    def num_subscribers(self) -> int:
        return len(self._subscribers)
