"""Ref-counted KV blocks with prefix caching.

A block is in one of three states:
- referenced (ref_count > 0) by one or more sequences;
- cached: unreferenced but holding a full block of known content (its chained hash, its token
  ids); the eviction policy tracks it and may give it up when a fresh block is needed;
- free: unreferenced and holding nothing worth keeping.

Rules:
- Only full blocks whose K/V are computed are ever cached (`commit`), so a request's last, partial
  block is never shared, and a block is never reused before its K/V exist.
- A cached block is reused only when the hash *and* the stored token ids match.
- A referenced block is never handed out: new blocks come from the free list, then from the
  eviction policy's victims (which are unreferenced by its contract).
- Every stored / removed hash is recorded for `drain_kv_events()` as a net change since the last
  drain, so a subscriber that applies `removed` and `stored` in either order ends up right.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gpu_worker.sequence import Sequence
from policies.block_hash import hash_block, root_hash
from policies.eviction import BlockInfo, EvictionPolicy


@dataclass(eq=False, slots=True)
class Block:
    block_id: int
    ref_count: int = 0
    hash: int | None = None  # set while the block is in the prefix cache
    token_ids: tuple[int, ...] = ()


class BlockManager:
    def __init__(
        self,
        num_blocks: int,
        block_size: int,
        policy: EvictionPolicy,
        enable_prefix_caching: bool,
        clock: Callable[[], float],
    ) -> None:
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.blocks = [Block(i) for i in range(num_blocks)]
        # Free blocks as a stack: the most recently freed block is reused first and untouched
        # blocks are handed out in id order, so the blocks ever used are [0, high_water) and the
        # memory a step touches stays as small (and as warm) as the load allows.
        self._free: list[int] = list(range(num_blocks - 1, -1, -1))
        self.high_water = 0
        self._cached: dict[int, int] = {}  # hash → block id
        self._policy = policy
        self._caching = enable_prefix_caching
        self._clock = clock
        self._events: dict[int, bool] = {}  # hash → True stored / False removed, net

    # ---- queries -------------------------------------------------------------------------

    def num_free_blocks(self) -> int:
        """Blocks that can be handed out now (free, or cached and evictable)."""
        return len(self._free) + self._policy.num_evictable()

    def num_empty_blocks(self) -> int:
        return len(self._free)

    def num_cached_blocks(self) -> int:
        return len(self._cached)

    def held_hashes(self) -> list[int]:
        return list(self._cached)

    def ref_counts(self) -> list[int]:
        return [b.ref_count for b in self.blocks]

    def drain_events(self) -> tuple[list[int], list[int]]:
        stored = [h for h, s in self._events.items() if s]
        removed = [h for h, s in self._events.items() if not s]
        self._events.clear()
        return stored, removed

    # ---- admission -----------------------------------------------------------------------

    def match_prefix(self, seq: Sequence) -> list[int]:
        """Cached blocks holding the longest prefix of `seq`, leaving at least one token to
        compute (its logits give the next token)."""
        if not self._caching:
            return []
        max_blocks = (seq.num_matchable_tokens - 1) // self.block_size
        self._extend_hashes(seq, max_blocks)
        matched: list[int] = []
        for i in range(max_blocks):
            block_id = self._cached_block(seq, i)
            if block_id is None:
                break
            matched.append(block_id)
        return matched

    def can_admit(self, seq: Sequence, matched: list[int], num_new_tokens: int) -> bool:
        needed = self._blocks_for(len(matched) * self.block_size + num_new_tokens) - len(matched)
        # Matched blocks that are unreferenced are counted as evictable; taking them uses them up.
        reclaimed = sum(1 for b in matched if self.blocks[b].ref_count == 0)
        return needed <= self.num_free_blocks() - reclaimed

    def admit(self, seq: Sequence, matched: list[int]) -> None:
        """Give `seq` the matched cached blocks; it then has `len(matched)` blocks computed."""
        now = self._clock()
        for i, block_id in enumerate(matched):
            block = self.blocks[block_id]
            assert block.hash is not None
            block.ref_count += 1
            self._policy.hit(block.hash, self._info(seq, i), now)
        seq.block_table = list(matched)
        seq.num_computed_tokens = len(matched) * self.block_size
        seq.num_committed_blocks = len(matched)

    # ---- swap-in -------------------------------------------------------------------------

    def swap_in(self, seq: Sequence, num_new_tokens: int) -> list[int] | None:
        """Device blocks for a swapped-out `seq` (no blocks held, `num_computed_tokens` kept):
        its computed tokens plus `num_new_tokens` more. A full computed block whose K/V are
        still in the prefix cache is shared again (same chained hash and token ids, so the same
        K/V); every other block is fresh. Returns the block-table positions below
        ceil(num_computed_tokens / block_size) that got a fresh block, the ones whose K/V must be
        copied back from the host; None (and no change) if the blocks are not there.

        Any cached block may be reused, not only a leading run: a block's K/V depend only on
        the tokens up to its end, which its chained hash pins down."""
        assert not seq.block_table, "swap_in of a sequence that holds blocks"
        num_full = seq.num_computed_tokens // self.block_size
        reused: list[int | None] = [None] * num_full
        if self._caching:
            self._extend_hashes(seq, num_full)
            reused = [self._cached_block(seq, i) for i in range(num_full)]
        num_reused = sum(1 for b in reused if b is not None)
        needed = self._blocks_for(seq.num_computed_tokens + num_new_tokens) - num_reused
        # Reused blocks that are unreferenced are counted as evictable; reusing uses them up.
        reclaimed = sum(1 for b in reused if b is not None and self.blocks[b].ref_count == 0)
        if needed > self.num_free_blocks() - reclaimed:
            return None
        now = self._clock()
        for i, block_id in enumerate(reused):  # claimed first, so _take_block cannot evict them
            if block_id is not None:
                self.blocks[block_id].ref_count += 1
                self._policy.hit(seq.block_hashes[i], self._info(seq, i), now)
        num_computed_blocks = self._blocks_for(seq.num_computed_tokens)
        total = self._blocks_for(seq.num_computed_tokens + num_new_tokens)
        table: list[int] = []
        fresh: list[int] = []
        for i in range(total):
            block_id = reused[i] if i < num_full else None
            if block_id is None:
                block_id = self._take_block()
                if i < num_computed_blocks:
                    fresh.append(i)
            table.append(block_id)
        seq.block_table = table
        seq.num_committed_blocks = 0  # commit() re-offers the fresh full blocks
        return fresh

    def _cached_block(self, seq: Sequence, i: int) -> int | None:
        """The cached block holding full block i of `seq` (its hash computed), or None."""
        block_id = self._cached.get(seq.block_hashes[i])
        if block_id is None:
            return None
        start = i * self.block_size
        if self.blocks[block_id].token_ids != tuple(seq.token_ids[start : start + self.block_size]):
            return None  # a hash collision: not this block's K/V
        return block_id

    # ---- growth --------------------------------------------------------------------------

    def allocate_slots(self, seq: Sequence, num_new_tokens: int) -> bool:
        """Make room for `num_new_tokens` more tokens of `seq`; False (and no change) if the
        blocks are not there."""
        needed = self._blocks_for(seq.num_computed_tokens + num_new_tokens) - len(seq.block_table)
        if needed <= 0:
            return True
        if needed > self.num_free_blocks():
            return False
        for _ in range(needed):
            seq.block_table.append(self._take_block())
        return True

    def commit(self, seq: Sequence) -> None:
        """Offer the blocks of `seq` that are full and computed to the prefix cache."""
        full = seq.num_computed_tokens // self.block_size
        if not self._caching or full <= seq.num_committed_blocks:
            return
        self._extend_hashes(seq, full)
        now = self._clock()
        for i in range(seq.num_committed_blocks, full):
            block = self.blocks[seq.block_table[i]]
            h = seq.block_hashes[i]
            if block.hash is not None or h in self._cached:
                continue  # already cached (reused), or a twin computed by a concurrent request
            start = i * self.block_size
            block.hash = h
            block.token_ids = tuple(seq.token_ids[start : start + self.block_size])
            self._cached[h] = block.block_id
            self._policy.insert(h, self._info(seq, i), now)
            self._event(h, True)
        seq.num_committed_blocks = full

    def free(self, seq: Sequence) -> None:
        """Drop every reference of `seq`. Cached blocks stay cached (tail first to the policy, so
        a recency policy gives up a prompt's tail before its head)."""
        self._release(seq.block_table)
        seq.block_table = []
        seq.num_committed_blocks = 0

    def rewind(self, seq: Sequence, num_valid_tokens: int) -> None:
        """Forget the K/V of `seq` past its first `num_valid_tokens` tokens (a prediction's
        rejected part), so the next tokens are written from there. Blocks wholly past go back;
        cached ones stay cached, their K/V being right for the tokens they were computed from.
        The block that holds position `num_valid_tokens` is kept when it is private (not in the
        prefix cache, one reference), and then rewritten in place; otherwise it goes too and the
        valid part of it is recomputed (`num_computed_tokens` falls to its start)."""
        bs = self.block_size
        b = num_valid_tokens // bs
        keep = b
        computed = b * bs
        if b < len(seq.block_table):
            block = self.blocks[seq.block_table[b]]
            if block.hash is None and block.ref_count == 1:
                keep, computed = b + 1, num_valid_tokens
        self._release(seq.block_table[keep:])
        del seq.block_table[keep:]
        del seq.block_hashes[b:]
        seq.num_committed_blocks = min(seq.num_committed_blocks, b)
        seq.num_computed_tokens = min(seq.num_computed_tokens, computed)

    # ---- internals -----------------------------------------------------------------------

    def _release(self, block_ids: list[int]) -> None:
        """Drop one reference to each block, last first; an unreferenced block stays cached if
        it holds cached content, else it is free."""
        now = self._clock()
        for block_id in reversed(block_ids):
            block = self.blocks[block_id]
            block.ref_count -= 1
            assert block.ref_count >= 0, f"block {block_id} released twice"
            if block.ref_count == 0:
                if block.hash is not None:
                    self._policy.release(block.hash, now)
                else:
                    self._free.append(block_id)

    def _take_block(self) -> int:
        if self._free:
            block_id = self._free.pop()
            self.high_water = max(self.high_water, block_id + 1)
        else:
            victims = self._policy.evict(1, self._clock())
            assert victims, "no evictable block although num_free_blocks() said so"
            h = victims[0]
            block_id = self._cached.pop(h)  # type: ignore[call-overload]
            block = self.blocks[block_id]
            assert block.ref_count == 0, "eviction policy returned a referenced block"
            block.hash, block.token_ids = None, ()
            self._event(h, False)  # type: ignore[arg-type]
        self.blocks[block_id].ref_count = 1
        return block_id

    def _blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def _extend_hashes(self, seq: Sequence, num_blocks: int) -> None:
        hashes = seq.block_hashes
        parent = hashes[-1] if hashes else root_hash(seq.extra)
        bs = self.block_size
        for i in range(len(hashes), num_blocks):
            parent = hash_block(parent, seq.token_ids[i * bs : (i + 1) * bs])
            hashes.append(parent)

    def _info(self, seq: Sequence, position: int) -> BlockInfo:
        m = seq.meta
        # The chain link lets a policy see that a block whose parent is gone is unreachable.
        parent = seq.block_hashes[position - 1] if 0 < position <= len(seq.block_hashes) else None
        return BlockInfo(
            m.category,
            m.turn,
            position,
            m.conversation,
            parent,
            self._blocks_for(seq.num_prompt_tokens),
        )

    def _event(self, h: int, stored: bool) -> None:
        previous = self._events.pop(h, None)
        if previous is None:
            self._events[h] = stored
        # else: the opposite change is pending; the two cancel out
