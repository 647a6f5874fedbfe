"""Workload-aware eviction: keep the blocks that buy the most expected hits per block-second.

- **Classes.** Every block belongs to a class: (turn bucket, category, position bucket, is the
  prompt's last block, conversation pace, turn growth). Each part is switchable so the study can
  measure what each signal is worth; turn, category and conversation come from the gateway.
  Growth = how many blocks the turn added to its conversation's previous prompt (a pasted
  document ends a conversation far more often than a typed message).
- **Learned value.** A `ReuseModel` learns online, per class, the distribution of the time from
  a block's release to its reuse — including the chance that it never comes back — from what
  it sees: hits on cached blocks, and re-inserts of recently evicted keys kept in a bounded,
  sampled ghost list (a block that falls out of sight is a censored observation). From it, per
  class and age, an index: the best reuse probability per second of cache time the block can
  still earn (`ReuseModel.reuse_rate_by_age`). The victim is the released block of lowest index.
  With `shared_shape`, *when* returns come is learned per position group and a class mostly
  learns *whether* its blocks come back (see `reuse_model`), so finer classes learn fast.
  Nothing is fitted to a trace: every number comes from the reuse gaps the policy has seen.
- **Structure** (`orphans_first`). In a prefix cache a block is only reachable through its parent;
  once the parent is gone the block can never be hit again, so such orphans go before anything.

Victim choice. Released blocks wait in one queue per class, oldest release first (a request's
blocks are released tail first, so a prompt's tail leaves before its head). Within a class the
index only depends on age, and it falls with age past the class's return peak, so only the head
of each queue is a candidate: an `evict` call puts the heads in a heap by index and pops, so a
victim costs O(log k) for k classes in use (a few dozen at most), amortised O(1) in the cache
size. Until the model has seen enough, the order is plain LRU.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import OrderedDict
from collections.abc import Callable, Hashable

from config.eviction import WorkloadAwareEviction
from policies.eviction.base import BlockInfo, EvictionPolicy, Key
from policies.eviction.reuse_model import NUM_BINS, ReuseModel, age_bin

_REFRESH_OBS = 2000  # recompute class indexes after this many new observations
_MIN_GHOST = 64
_MAX_WALK = 256  # bound on the walk from a chosen block down to its chain's tail
_EXPOSURE_SAMPLE = 512  # open observations drawn per refresh to estimate their exposure


GROWTH_UNIT_TOKENS = 512  # growth buckets count 512-token units (one block of the Mooncake trace)


class _Meta:
    __slots__ = ("cls", "parent", "released_at")

    def __init__(self, cls: Hashable, parent: Key | None) -> None:
        self.cls = cls
        self.parent = parent
        self.released_at: float | None = None  # set while released (a candidate or an orphan)


def _position_group(cls: Hashable) -> Hashable:
    """The class with its request-level parts (turn, category, pace, growth) pooled."""
    return cls[2:4]  # type: ignore[index]


class WorkloadAwarePolicy(EvictionPolicy):
    name = "workload_aware"

    def __init__(
        self, cfg: WorkloadAwareEviction | None = None, block_tokens: int = GROWTH_UNIT_TOKENS
    ) -> None:
        self.cfg = cfg or WorkloadAwareEviction()
        # a turn's growth is bucketed in tokens, whatever the block size of the cache
        self._growth_unit_blocks = GROWTH_UNIT_TOKENS / max(1, block_tokens)
        self.model = ReuseModel(
            self.cfg.prior_weight,
            self.cfg.half_life_obs,
            _position_group if self.cfg.shared_shape else None,
            self.cfg.shared_shape,
        )
        self._meta: dict[Key, _Meta] = {}  # every tracked block
        self._children: dict[Key, set[Key]] = {}  # tracked parent -> its tracked children
        self._queues: dict[Hashable, OrderedDict[Key, float]] = {}  # class -> released, oldest 1st
        self._num_queued = 0
        self._orphans: OrderedDict[Key, None] = OrderedDict()  # released blocks with no parent
        # sampled evictions -> (class, released at, age bins already counted)
        self._ghost: OrderedDict[Key, tuple[Hashable, float, int]] = OrderedDict()
        # conversation id -> its latest turn: (turn, prompt blocks, first seen at, pace, growth)
        self._conversations: OrderedDict[int, tuple[int, int, float, int, int]] = OrderedDict()
        self._pool: list[Key] = []  # released, non-orphan blocks (for sampling)
        self._pool_at: dict[Key, int] = {}
        self._ghost_ring: list[Key] = []  # the ghost's keys, for sampling (stale ones skipped)
        self._rng = random.Random(0)
        self.residence_s = 0.0  # running mean age of evicted (non-orphan) blocks
        self._indexes: dict[Hashable, list[float]] = {}
        self._indexes_at = -(10**9)

    # -- classes and values -------------------------------------------------------------------

    def _conversation_state(self, info: BlockInfo, now: float) -> tuple[int, int]:
        """(pace, growth) of this request's conversation: bucket of the gap between its last two
        turns, and of the number of blocks this turn added (-1: unknown / switched off). A new
        turn is told by its (turn, prompt length), not by the clock: the engine touches one
        request's blocks at several times (prefix hits on admission, inserts per prefill chunk)."""
        c = self.cfg
        if info.conversation is None or not (c.use_conversation or c.use_growth):
            return (-1, -1)
        seen = self._conversations.get(info.conversation)
        if seen is None or seen[:2] != (info.turn, info.prompt_blocks):
            pace = growth = -1
            if seen is not None:
                pace = min(int(math.log2(max(now - seen[2], 1.0))) // 2, 6)
                units = (info.prompt_blocks - seen[1]) / self._growth_unit_blocks
                growth = min(int(math.log2(max(units, 1.0))), c.max_growth_bucket)
            seen = (info.turn, info.prompt_blocks, now, pace, growth)
            self._conversations[info.conversation] = seen
            self._conversations.move_to_end(info.conversation)
            while len(self._conversations) > max(len(self._meta), _MIN_GHOST):
                self._conversations.popitem(last=False)
        return (seen[3] if c.use_conversation else -1, seen[4] if c.use_growth else -1)

    def block_class(self, info: BlockInfo, state: tuple[int, int] = (-1, -1)) -> Hashable:
        c = self.cfg
        # Clamped both ways: a turn is a client's hint, and every distinct class is a table.
        turn = min(max(info.turn, 0), c.max_turn_bucket) if c.use_turn else 0
        category = info.category if c.use_category else ""
        pos = 0
        if c.use_position and info.position > 0:
            pos = min(int(math.log2(info.position)) + 1, c.max_position_bucket)
        last = c.use_position and info.prompt_blocks > 0 and info.position == info.prompt_blocks - 1
        return (turn, category, pos, last, *state)

    def index(self, cls: Hashable, age_s: float) -> float:
        """Expected reuses per second of cache time a released block of `cls` aged `age_s` can
        still earn (higher = keep)."""
        table = self._indexes.get(cls)
        if table is None:
            table = self.model.reuse_rate_by_age(
                cls, self.cfg.horizon_factor * self.residence_s if self.cfg.horizon_factor else 0.0
            )
            if not self.cfg.sample_size:  # heads-only needs value falling with age
                for b in range(1, len(table)):
                    table[b] = min(table[b], table[b - 1])
            self._indexes[cls] = table
        return table[age_bin(age_s)]

    def _refresh(self, now: float) -> None:
        """Recompute class values after _REFRESH_OBS new observations (often while the model is
        young), with the open observations' exposure estimated from a sample of them."""
        moved = self.model.version - self._indexes_at
        if moved < min(_REFRESH_OBS, 16 + self._indexes_at // 8):
            return
        self._indexes.clear()
        self._indexes_at = self.model.version
        exposure: dict[Hashable, list[float]] = {}
        self._add_exposure(exposure, self._pool, now, lambda k: self._released(k))
        bound = 2 * len(self._ghost) + _MIN_GHOST
        if len(self._ghost_ring) > bound:
            self._ghost_ring = [k for k in self._ghost_ring if k in self._ghost]
            if len(self._ghost_ring) > bound:
                # A watched key evicted again (back, then out again) is in the ring once per
                # eviction; in a cache of a few blocks such repeats can outnumber the bound.
                self._ghost_ring = list(dict.fromkeys(self._ghost_ring))
        self._add_exposure(exposure, self._ghost_ring, now, self._ghost.get)
        self.model.set_open(exposure)

    def _released(self, key: Key) -> tuple[Hashable, float, int] | None:
        meta = self._meta.get(key)
        if meta is None or meta.released_at is None:
            return None
        return (meta.cls, meta.released_at, 0)

    def _add_exposure(
        self,
        exposure: dict[Hashable, list[float]],
        keys: list[Key],
        now: float,
        lookup: Callable[[Key], tuple[Hashable, float, int] | None],
    ) -> None:
        """Add the at-risk age bins of open observations, from `_EXPOSURE_SAMPLE` of `keys`."""
        if not keys:
            return
        draws = min(len(keys), _EXPOSURE_SAMPLE)
        weight = len(keys) / draws
        for _ in range(draws):
            seen = lookup(keys[self._rng.randrange(len(keys))])
            if seen is None:
                continue
            cls, released_at, counted = seen
            bins = exposure.get(cls)
            if bins is None:
                bins = exposure[cls] = [0.0] * NUM_BINS
            last = age_bin(now - released_at)
            for b in range(counted, last):
                bins[b] += weight
            if last >= counted:
                bins[last] += weight / 2  # part of the current bin lived through, on average

    def _learned(self) -> bool:
        return self.cfg.learned and self.model.num_observations() >= 10 * self.cfg.prior_weight

    # -- the interface ------------------------------------------------------------------------

    def insert(self, key: Key, info: BlockInfo, now: float) -> None:
        seen = self._ghost.pop(key, None)
        if seen is not None:  # a recently evicted block is wanted again: a reuse we missed
            self.model.observe(seen[0], now - seen[1], True, seen[2])
        self._touch(key, info, now)

    def hit(self, key: Key, info: BlockInfo, now: float) -> None:
        self._touch(key, info, now)

    def _touch(self, key: Key, info: BlockInfo, now: float) -> None:
        cls = self.block_class(info, self._conversation_state(info, now))
        meta = self._meta.get(key)
        if meta is None:
            self._meta[key] = _Meta(cls, info.parent)
        else:
            if meta.released_at is not None:
                self.model.observe(meta.cls, now - meta.released_at, True)
                self._unqueue(key, meta)
            meta.cls, meta.parent = cls, info.parent
        if info.parent is not None:  # (re)link: the parent may have been evicted and come back
            self._children.setdefault(info.parent, set()).add(key)

    def release(self, key: Key, now: float) -> None:
        meta = self._meta.get(key)
        if meta is None:
            return
        if meta.released_at is not None:
            self._unqueue(key, meta)
        meta.released_at = now
        if self.cfg.orphans_first and meta.parent is not None and meta.parent not in self._meta:
            self._orphans[key] = None
            return
        queue = self._queues.get(meta.cls)
        if queue is None:
            queue = self._queues[meta.cls] = OrderedDict()
        queue[key] = now
        self._num_queued += 1
        self._pool_at[key] = len(self._pool)
        self._pool.append(key)

    def evict(self, n: int, now: float) -> list[Key]:
        out: list[Key] = []
        while len(out) < n and self._orphans:
            key = self._orphans.popitem(last=False)[0]
            self._drop(key, now, orphan=True)
            out.append(key)
        if len(out) >= n:
            return out
        learned = self._learned()
        if learned:
            self._refresh(now)
        if self.cfg.sample_size and learned:
            while len(out) < n and self._pool:
                key = self._sampled_victim(now)
                if self.cfg.tail_first:
                    key = self._leaf_below(key)
                self._unqueue(key, self._meta[key], keep_release_time=True)
                self._drop(key, now)
                out.append(key)
                self._take_orphans(out, n, now)  # children of what just went
            return out
        heads: list[tuple[float, float, int, Hashable]] = []
        for i, (cls, queue) in enumerate(self._queues.items()):
            if queue:
                heads.append((*self._rank(cls, queue, now, learned), i, cls))
        heapq.heapify(heads)
        while len(out) < n and heads:
            _, released_at, i, cls = heads[0]
            queue = self._queues[cls]
            if not queue:  # emptied by orphaning since it was ranked
                heapq.heappop(heads)
                continue
            if next(iter(queue.values())) != released_at:  # its head changed: rank again
                heapq.heapreplace(heads, (*self._rank(cls, queue, now, learned), i, cls))
                continue
            key = queue.popitem(last=False)[0]
            self._num_queued -= 1
            self._pool_remove(key)
            self._drop(key, now)
            out.append(key)
            self._take_orphans(out, n, now)  # children of what just went
            if queue:
                heapq.heapreplace(heads, (*self._rank(cls, queue, now, learned), i, cls))
            else:
                heapq.heappop(heads)
        return out

    def _take_orphans(self, out: list[Hashable], n: int, now: float) -> None:
        """Append queued orphans (blocks whose parent is gone) to `out` until it holds `n`."""
        while len(out) < n and self._orphans:
            orphan = self._orphans.popitem(last=False)[0]
            self._drop(orphan, now, orphan=True)
            out.append(orphan)

    def _sampled_victim(self, now: float) -> Key:
        """The lowest (index, release time) among `sample_size` released blocks drawn at random:
        O(1) a victim, and exact enough whatever the shape of value against age. (The hot loop
        of the policy: `index` and `age_bin` are inlined.)"""
        pool, metas, tables, rand = self._pool, self._meta, self._indexes, self._rng.random
        size = len(pool)
        best_value = best_released = math.inf
        victim: Key = None
        for _ in range(self.cfg.sample_size):
            key = pool[int(rand() * size)]
            meta = metas[key]
            released_at = meta.released_at if meta.released_at is not None else now
            table = tables.get(meta.cls)
            if table is None:
                self.index(meta.cls, 0.0)  # builds the class's table
                table = tables[meta.cls]
            age_s = now - released_at
            b = 0 if age_s < 1.0 else min(int(2.0 * math.log2(age_s)) + 1, NUM_BINS - 1)
            value = table[b]
            if value < best_value or (value == best_value and released_at < best_released):
                best_value, best_released, victim = value, released_at, key
        return victim

    def _leaf_below(self, key: Key) -> Key:
        """The deepest block under `key` (following any child): a prefix is worth more without
        its tail than without its head, so a chosen chain gives up its tail first. Everything
        under a released block is released (a request holds its whole prefix)."""
        for _ in range(_MAX_WALK):
            children = self._children.get(key)
            if not children:
                break
            child = next(iter(children))
            if child not in self._pool_at:
                break
            key = child
        return key

    def _rank(
        self, cls: Hashable, queue: OrderedDict[Key, float], now: float, learned: bool
    ) -> tuple[float, float]:
        released_at = next(iter(queue.values()))
        if not learned:
            return (0.0, released_at)  # LRU
        return (self.index(cls, now - released_at), released_at)

    def remove(self, key: Key) -> None:
        meta = self._meta.get(key)
        if meta is not None:
            if meta.released_at is not None:
                self._unqueue(key, meta)
            self._unlink(key)

    def num_evictable(self) -> int:
        return self._num_queued + len(self._orphans)

    # -- bookkeeping --------------------------------------------------------------------------

    def _unqueue(self, key: Key, meta: _Meta, keep_release_time: bool = False) -> None:
        """Take a released block out of its queue or the orphans (it is no longer a candidate)."""
        if not keep_release_time:
            meta.released_at = None
        if key in self._orphans:
            del self._orphans[key]
            return
        queue = self._queues.get(meta.cls)
        if queue is not None and queue.pop(key, None) is not None:
            self._num_queued -= 1
        self._pool_remove(key)

    def _pool_remove(self, key: Key) -> None:
        i = self._pool_at.pop(key, None)
        if i is None:
            return
        last = self._pool.pop()
        if last != key:
            self._pool[i] = last
            self._pool_at[last] = i

    def _drop(self, key: Key, now: float, orphan: bool = False) -> None:
        meta = self._meta[key]
        released_at = meta.released_at if meta.released_at is not None else now
        if not orphan:
            self.residence_s += 1e-3 * ((now - released_at) - self.residence_s)
        if hash(key) % self.cfg.ghost_sample == 0:  # watched for a late reuse
            counted = self.model.observe_partial(meta.cls, now - released_at)
            self._ghost[key] = (meta.cls, released_at, counted)
            self._ghost_ring.append(key)
            limit = max(int(self.cfg.ghost_factor * len(self._meta)), _MIN_GHOST)
            while len(self._ghost) > limit:  # out of sight: censored at its age
                cls, t, counted = self._ghost.popitem(last=False)[1]
                self.model.observe(cls, now - t, False, counted)
        else:  # not watched: censored now (Kaplan-Meier stays unbiased under random censoring)
            self.model.observe(meta.cls, now - released_at, False)
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
            child_meta = self._meta.get(child)
            if not self.cfg.orphans_first or child_meta is None:
                continue
            if child_meta.released_at is not None and child not in self._orphans:
                queue = self._queues.get(child_meta.cls)
                if queue is not None and queue.pop(child, None) is not None:
                    self._num_queued -= 1
                self._pool_remove(child)
                self._orphans[child] = None  # its parent is gone: it can never be hit again
