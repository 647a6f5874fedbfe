"""Workload-aware eviction: keep blocks in proportion to how likely they are to be reused soon.

Two parts, each switchable so the study can measure them apart:

- **Structure** (`orphans_first`). In a prefix cache a block is only reachable through its parent;
  once the parent is gone the block can never be hit again. Such orphans are evicted before
  anything else, and among blocks of equal value the deepest position goes first.
- **Learned value** (`learned`). Every block belongs to a class: (turn bucket, category, position
  bucket, is-last-block). A `ReuseModel` learns online, per class, the probability that a released
  block is reused within a horizon, from the reuse gaps it sees (resident hits, and re-inserts of
  recently evicted keys kept in a bounded ghost list). A block released at time t gets the eviction
  key `t + T * boost`, where T is the typical residence time in this cache (running mean of the
  age of evicted blocks) and `boost = P_class(reuse within H) / P_all(reuse within H)`, capped,
  with horizon `H = horizon_factor * T`. So an average block behaves as in LRU, a block twice as
  likely to come back stays about twice as long, and a block that never comes back leaves first.
  Nothing is tuned per trace: T and the probabilities are measured, the rest are ratios.

Keys are fixed at release, so victims come off a heap (lazy invalidation: O(log n) per eviction).
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict
from collections.abc import Hashable

from config.eviction import WorkloadAwareEviction
from policies.eviction.base import BlockInfo, EvictionPolicy, Key
from policies.eviction.reuse_model import ReuseModel

_RESIDENCE_EWMA = 1e-3  # weight of one eviction in the running residence time
_BOOST_REFRESH_OBS = 1000  # recompute class boosts after this many new observations
_MIN_GHOST = 1024


class _Meta:
    __slots__ = ("cls", "position", "parent", "released_at")

    def __init__(self, cls: Hashable, position: int, parent: Key | None) -> None:
        self.cls = cls
        self.position = position
        self.parent = parent
        self.released_at: float | None = None  # set while a reuse would count as an observation


class WorkloadAwarePolicy(EvictionPolicy):
    name = "workload_aware"

    def __init__(self, cfg: WorkloadAwareEviction | None = None) -> None:
        self.cfg = cfg or WorkloadAwareEviction()
        self.model = ReuseModel(self.cfg.prior_weight, self.cfg.half_life_obs)
        self._meta: dict[Key, _Meta] = {}  # every tracked block
        self._children: dict[Key, set[Key]] = {}  # tracked parent -> its tracked children
        self._heap: list[tuple[float, int, int, Key]] = []  # (key time, -position, seq, key)
        self._free_seq: dict[Key, int] = {}  # free blocks on the heap -> their live entry's seq
        self._orphans: OrderedDict[Key, None] = OrderedDict()  # free blocks with no parent
        self._ghost: OrderedDict[Key, tuple[Hashable, float]] = OrderedDict()
        self._seq = 0
        # conversation id -> (time of its latest turn, bucket of the gap before it)
        self._conversations: OrderedDict[int, tuple[float, int]] = OrderedDict()
        self.residence_s = 0.0  # T: running mean age of evicted blocks
        self._boosts: dict[Hashable, float] = {}
        self._boosts_at = -1

    # -- classes and values -------------------------------------------------------------------

    def _conversation_pace(self, info: BlockInfo, now: float) -> int:
        """Bucket of the gap between this conversation's last two turns (-1: unknown)."""
        if not self.cfg.use_conversation or info.conversation is None:
            return -1
        seen = self._conversations.get(info.conversation)
        if seen is None or seen[0] != now:  # the first block of a new turn: a new gap
            gap_s = now - seen[0] if seen is not None else -1.0
            bucket = -1 if gap_s < 0 else min(int(math.log2(max(gap_s, 1.0) / 30.0) + 1), 3)
            seen = (now, max(bucket, 0) if gap_s >= 0 else -1)
            self._conversations[info.conversation] = seen
            self._conversations.move_to_end(info.conversation)
            limit = max(len(self._meta), _MIN_GHOST)
            while len(self._conversations) > limit:
                self._conversations.popitem(last=False)
        return seen[1]

    def block_class(self, info: BlockInfo, pace: int = -1) -> Hashable:
        c = self.cfg
        turn = min(info.turn, c.max_turn_bucket) if c.use_turn else 0
        category = info.category if c.use_category else ""
        pos = 0
        if c.use_position and info.position > 0:
            pos = min(int(math.log2(info.position)) + 1, c.max_position_bucket)
        last = c.use_position and info.prompt_blocks > 0 and info.position == info.prompt_blocks - 1
        return (turn, category, pos, last, pace)

    def retention_s(self, cls: Hashable) -> float:
        """How long after its release a block of `cls` should stay (the key is release + this)."""
        if not self.cfg.learned or self.model.num_observations() < 10 * self.cfg.prior_weight:
            return self.residence_s  # the same for all: LRU order

        epoch = self.model.version // _BOOST_REFRESH_OBS
        if epoch != self._boosts_at:
            self._boosts.clear()
            self._boosts_at = epoch
        keep = self._boosts.get(cls)
        if keep is None:
            horizon_s = self.cfg.horizon_factor * max(self.residence_s, 1.0)
            p_all = self.model.p_reuse_within(None, horizon_s)
            p_cls = self.model.p_reuse_within(cls, horizon_s)
            boost = min(p_cls / p_all, self.cfg.max_boost) if p_all > 0 else 1.0
            keep = self.residence_s * boost
            self._boosts[cls] = keep
        return keep

    # -- the interface ------------------------------------------------------------------------

    def insert(self, key: Key, info: BlockInfo, now: float) -> None:
        seen = self._ghost.pop(key, None)
        if seen is not None:  # a recently evicted block is wanted again: a reuse we missed
            self.model.observe(seen[0], now - seen[1], True)
        self._touch(key, info, now)

    def hit(self, key: Key, info: BlockInfo, now: float) -> None:
        self._touch(key, info, now)

    def _touch(self, key: Key, info: BlockInfo, now: float) -> None:
        meta = self._meta.get(key)
        if meta is not None and meta.released_at is not None:
            self.model.observe(meta.cls, now - meta.released_at, True)
        self._free_seq.pop(key, None)
        self._orphans.pop(key, None)
        cls = self.block_class(info, self._conversation_pace(info, now))
        if meta is None:
            self._meta[key] = _Meta(cls, info.position, info.parent)
        else:
            meta.cls, meta.position, meta.parent, meta.released_at = (
                cls,
                info.position,
                info.parent,
                None,
            )
        if info.parent is not None:  # (re)link: the parent may have been evicted and come back
            self._children.setdefault(info.parent, set()).add(key)

    def release(self, key: Key, now: float) -> None:
        meta = self._meta.get(key)
        if meta is None:
            return
        meta.released_at = now
        self._free_seq.pop(key, None)
        self._orphans.pop(key, None)
        if self.cfg.orphans_first and meta.parent is not None and meta.parent not in self._meta:
            self._orphans[key] = None
            return
        self._seq += 1
        self._free_seq[key] = self._seq
        key_time = now + self.retention_s(meta.cls)
        heapq.heappush(self._heap, (key_time, -meta.position, self._seq, key))
        if len(self._heap) > 2 * len(self._free_seq) + 1024:  # drop stale entries
            self._heap = [e for e in self._heap if self._free_seq.get(e[3]) == e[2]]
            heapq.heapify(self._heap)

    def evict(self, n: int, now: float) -> list[Key]:
        out: list[Key] = []
        while len(out) < n and self._orphans:
            key = self._orphans.popitem(last=False)[0]
            self._drop(key, now, from_heap=False)
            out.append(key)
        while len(out) < n and self._heap:
            _, _, seq, key = heapq.heappop(self._heap)
            if self._free_seq.get(key) != seq:
                continue  # stale: touched, removed or released again since
            del self._free_seq[key]
            self._drop(key, now, from_heap=True)
            out.append(key)
        return out

    def remove(self, key: Key) -> None:
        if key in self._meta:
            self._free_seq.pop(key, None)
            self._orphans.pop(key, None)
            self._unlink(key)

    def num_evictable(self) -> int:
        return len(self._free_seq) + len(self._orphans)

    # -- bookkeeping --------------------------------------------------------------------------

    def _drop(self, key: Key, now: float, from_heap: bool) -> None:
        meta = self._meta[key]
        released_at = meta.released_at if meta.released_at is not None else now
        if from_heap:
            self.residence_s += _RESIDENCE_EWMA * ((now - released_at) - self.residence_s)
        self._ghost[key] = (meta.cls, released_at)
        limit = max(int(self.cfg.ghost_factor * len(self._meta)), _MIN_GHOST)
        while len(self._ghost) > limit:  # out of sight: censored at its age
            cls, t = self._ghost.popitem(last=False)[1]
            self.model.observe(cls, now - t, False)
        self._unlink(key)

    def _unlink(self, key: Key) -> None:
        meta = self._meta.pop(key)
        if meta.parent is not None:
            siblings = self._children.get(meta.parent)
            if siblings is not None:
                siblings.discard(key)
                if not siblings:
                    del self._children[meta.parent]
        for child in self._children.pop(key, ()):
            if self.cfg.orphans_first and self._free_seq.pop(child, None) is not None:
                self._orphans[child] = None  # its parent is gone: it can never be hit again
