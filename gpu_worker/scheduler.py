"""Continuous batching with chunked prefill under a per-step token budget.

Each step: running sequences first (decodes before unfinished prefills, oldest first), each taking
min(tokens it still needs, budget left); then waiting sequences in arrival order (preempted ones at
the front), each admitted with its prefix-cache hits when its first chunk's blocks are there.
When a running sequence cannot get a block, the newest running sequence not yet scheduled this
step is preempted; if there is none, the sequence preempts itself. A victim either swaps its
computed blocks out to host memory and later copies back those no longer in the prefix cache
(`swapped`, resumed before any waiting request is admitted, oldest first), or frees them and is
recomputed later (back at the front of `waiting`); `PreemptionCost` (gpu_worker/preemption.py)
decides. Either way its device blocks are freed at once (full ones stay in the prefix cache).

The copies a step needs are in its batch (`swap_out`, then `swap_in`); the model runner makes
them before the forward pass, in that order. So a device block freed by a swap-out can go to
another sequence in the same step, and every swap-out of a step is decided before its swap-ins.

Rule the engine keeps: a single sequence always fits the whole cache (max_model_len ≤ blocks ×
block_size), so the head of the queue is admitted once nothing else runs.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from gpu_worker.block_manager import BlockManager
from gpu_worker.preemption import HostBlockPool, PreemptionCost
from gpu_worker.sequence import Sequence, Status


@dataclass
class ScheduledBatch:
    """Sequences of one step, prefills first, then `num_decodes` decodes (one token each)."""

    seqs: list[Sequence] = field(default_factory=list)
    query_lens: list[int] = field(default_factory=list)
    num_decodes: int = 0
    swap_out: list[tuple[int, int]] = field(default_factory=list)  # (device block, host block)
    swap_in: list[tuple[int, int]] = field(default_factory=list)  # (host block, device block)
    num_blocks_used: int = 0  # every block id in the batch is below this

    @property
    def num_tokens(self) -> int:
        return sum(self.query_lens)


class Scheduler:
    def __init__(
        self,
        block_manager: BlockManager,
        max_batch_size: int,
        max_tokens_per_step: int,
        host_pool: HostBlockPool,
        cost: PreemptionCost,
    ) -> None:
        self.block_manager = block_manager
        self.max_batch_size = max_batch_size
        self.max_tokens_per_step = max_tokens_per_step
        self.host_pool = host_pool
        self.cost = cost
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.swapped: list[Sequence] = []  # in arrival order
        self.num_preemptions = 0
        self.num_swap_outs = 0
        self.num_blocks_swapped_out = 0
        self.num_blocks_swapped_in = 0  # fewer than out: cached blocks are shared, not copied
        self._batch = ScheduledBatch()  # the batch being built (swap-outs land here)
        self._swapped_now: set[int] = set()  # ids swapped out by the schedule() under way

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running or self.swapped)

    def remove(self, seq: Sequence) -> None:
        """Take `seq` out (finished or aborted) and drop its blocks."""
        if seq.status is Status.RUNNING:
            self.running.remove(seq)
            self.block_manager.free(seq)
        elif seq.status is Status.WAITING:
            self.waiting.remove(seq)
        elif seq.status is Status.SWAPPED:
            self.swapped.remove(seq)
            self.host_pool.free(seq.host_blocks)
            seq.host_blocks = []
        seq.status = Status.FINISHED

    def queued_prefill_tokens(self) -> int:
        running = sum(s.num_tokens - s.num_computed_tokens - 1 for s in self.running)
        running += sum(s.num_tokens - s.num_computed_tokens - 1 for s in self.swapped)
        return running + sum(s.num_tokens - s.num_computed_tokens for s in self.waiting)

    def _resume(
        self,
        seq: Sequence,
        num_new: int,
        decodes: list[Sequence],
        prefills: list[tuple[Sequence, int]],
    ) -> None:
        """`seq` runs this step with `num_new` tokens: a decode, or a (chunked) prefill."""
        seq.status = Status.RUNNING
        self.running.append(seq)
        if num_new == 1 and seq.num_computed_tokens + 1 == seq.num_tokens:
            decodes.append(seq)
        else:
            prefills.append((seq, num_new))

    def schedule(self) -> ScheduledBatch:
        batch = self._batch = ScheduledBatch()
        self._swapped_now.clear()
        budget = self.max_tokens_per_step
        prefills: list[tuple[Sequence, int]] = []
        decodes: list[Sequence] = []
        scheduled: set[int] = set()
        order = sorted(
            self.running, key=lambda s: (s.num_tokens - s.num_computed_tokens > 1, s.arrival)
        )
        for seq in order:
            if budget == 0:
                break
            if seq.status is not Status.RUNNING:
                continue  # preempted earlier in this loop
            num_new = min(seq.num_tokens - seq.num_computed_tokens, budget)
            if not self._make_room(seq, num_new, scheduled):
                continue
            scheduled.add(id(seq))
            budget -= num_new
            if num_new == 1 and seq.num_computed_tokens + 1 == seq.num_tokens:
                decodes.append(seq)
            else:
                prefills.append((seq, num_new))
        while self.swapped and budget > 0 and len(self.running) < self.max_batch_size:
            seq = self.swapped[0]
            num_new = min(seq.num_tokens - seq.num_computed_tokens, budget)
            if id(seq) in self._swapped_now:
                break  # no copy out and straight back in within one step
            fresh = self.block_manager.swap_in(seq, num_new)
            if fresh is None:
                break
            self.swapped.pop(0)
            # Only blocks that left the device move back; still-cached ones are shared again.
            batch.swap_in.extend((seq.host_blocks[i], seq.block_table[i]) for i in fresh)
            self.num_blocks_swapped_in += len(fresh)
            self.host_pool.free(seq.host_blocks)  # copied back before any later swap-out
            seq.host_blocks = []
            self._resume(seq, num_new, decodes, prefills)
            budget -= num_new
        # Swapped sequences come back before anything new is admitted (no starvation).
        while (
            not self.swapped
            and self.waiting
            and budget > 0
            and len(self.running) < self.max_batch_size
        ):
            seq = self.waiting[0]
            matched = self.block_manager.match_prefix(seq)
            num_new = min(seq.num_tokens - len(matched) * self.block_manager.block_size, budget)
            if not self.block_manager.can_admit(seq, matched, num_new):
                break
            self.waiting.popleft()
            self.block_manager.admit(seq, matched)
            ok = self.block_manager.allocate_slots(seq, num_new)
            assert ok, "can_admit promised these blocks"
            if not seq.admitted_once:
                seq.num_cached_tokens = seq.num_computed_tokens
                seq.admitted_once = True
            self._resume(seq, num_new, decodes, prefills)
            budget -= num_new
        for seq, num_new in prefills:
            batch.seqs.append(seq)
            batch.query_lens.append(num_new)
        batch.seqs.extend(decodes)
        batch.query_lens.extend([1] * len(decodes))
        batch.num_decodes = len(decodes)
        batch.num_blocks_used = self.block_manager.high_water
        return batch

    def _make_room(self, seq: Sequence, num_new: int, scheduled: set[int]) -> bool:
        """Allocate blocks for `seq`, preempting newer unscheduled sequences; False if `seq`
        itself had to go."""
        while not self.block_manager.allocate_slots(seq, num_new):
            victims = [s for s in self.running if s is seq or id(s) not in scheduled]
            victim = max(victims, key=lambda s: s.arrival)
            self._preempt(victim)
            if victim is seq:
                return False
        return True

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.num_preemptions += 1
        num_blocks = -(-seq.num_computed_tokens // self.block_manager.block_size)
        host_blocks = None
        if self.cost.prefer_swap(seq.num_computed_tokens, num_blocks):
            host_blocks = self.host_pool.allocate(num_blocks)  # None: pool full, recompute
        if host_blocks is not None:
            self._batch.swap_out.extend(zip(seq.block_table, host_blocks, strict=False))
            self.num_blocks_swapped_out += len(host_blocks)
            self.block_manager.free(seq)
            seq.host_blocks = host_blocks
            seq.status = Status.SWAPPED
            self.swapped.append(seq)
            self.swapped.sort(key=lambda s: s.arrival)
            self._swapped_now.add(id(seq))
            self.num_swap_outs += 1
            return
        self.block_manager.free(seq)
        seq.num_computed_tokens = 0
        seq.status = Status.WAITING
        self.waiting.appendleft(seq)

    def postprocess(self, batch: ScheduledBatch) -> None:
        """Account for a step that ran: the scheduled tokens now have K/V."""
        for seq, num_new in zip(batch.seqs, batch.query_lens, strict=True):
            seq.num_computed_tokens += num_new
            self.block_manager.commit(seq)
