"""One simulated serving engine for the routing simulation: prefix cache + continuous batching.

The model (documented in docs/routing.md):
- KV cache of `capacity_blocks` blocks of `block_size` tokens. A prompt's blocks are the trace's
  `hash_ids`; a cached prefix is reused only while every earlier block is cached too. Blocks a
  running request uses are referenced; released blocks stay cached until the eviction policy
  (the project's own, `policies.eviction`) gives them up for room.
- Admission (FCFS, head of line): a request needs room for its uncached prompt blocks plus its
  output blocks, reserved until it finishes; no preemption. At most `max_num_seqs` admitted.
- Each step: every decoding sequence makes one token, and chunked prefill fills the rest of the
  `token_budget` in admission order. A prefill that completes emits the first token (TTFT) and
  stores its blocks. Step time comes from `policies.cost_model.step_time_s`.
- Stretches of decode-only steps are advanced in closed form (step time grows linearly with
  context), so the cost of the simulation is per event, not per token.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass

from config.cost_model import CostModelConfig
from policies.cost_model import decode_time_s, step_time_s
from policies.eviction import BlockInfo, EvictionPolicy
from policies.routing import WorkerView


@dataclass(slots=True)
class SimRequest:
    rid: int
    arrival_s: float
    input_tokens: int
    output_tokens: int
    hash_ids: list[int]
    turn: int = 0  # earlier requests of the same conversation (for the eviction policy)
    conversation: int | None = None
    matched_blocks: int = 0  # cached prefix blocks found at admission
    prefill_left: int = 0
    out_blocks: int = 0
    first_token_s: float = -1.0
    finish_s: float = -1.0
    worker: int = -1
    dropped: bool = False


class SimWorker:
    def __init__(
        self,
        index: int,
        cost: CostModelConfig,
        eviction: EvictionPolicy,
        capacity_blocks: int,
        block_size: int,
        token_budget: int,
        max_num_seqs: int,
    ) -> None:
        self.index = index
        self.cost = cost
        self.eviction = eviction
        self.capacity_blocks = capacity_blocks
        self.block_size = block_size
        self.token_budget = token_budget
        self.max_num_seqs = max_num_seqs
        self.cache: dict[int, int] = {}  # block id -> reference count
        self.reserved_blocks = 0  # blocks held by admitted requests outside `cache`
        self.waiting: deque[SimRequest] = deque()
        self.prefilling: deque[SimRequest] = deque()
        self.decoding: list[tuple[int, int, SimRequest]] = []  # (finish step, rid, request)
        self.context_tokens = 0  # tokens held by decoding sequences
        self.steps_done = 0
        self.queued_prefill_tokens = 0
        self.now = 0.0
        self.busy_s = 0.0
        self.prefill_busy_s = 0.0  # time in steps that carried prefill (compute-bound work)
        self.finished: list[SimRequest] = []

    # ---- the fleet view ---------------------------------------------------------------------

    def matched_blocks(self, hash_ids: list[int]) -> int:
        n = 0
        for h in hash_ids:
            if h not in self.cache:
                break
            n += 1
        return n

    def view(self, hash_ids: list[int]) -> WorkerView:
        running = len(self.decoding) + len(self.prefilling)
        referenced = len(self.cache) - self.eviction.num_evictable()
        return WorkerView(
            worker_id=str(self.index),
            running=running,
            waiting=len(self.waiting),
            in_flight=running + len(self.waiting),
            queued_prefill_tokens=self.queued_prefill_tokens,
            matched_blocks=self.matched_blocks(hash_ids),
            free_blocks=self.capacity_blocks - referenced - self.reserved_blocks,
            total_blocks=self.capacity_blocks,
        )

    # ---- arrivals -----------------------------------------------------------------------------

    def enqueue(self, req: SimRequest, matched_blocks: int) -> None:
        """Queue a routed request; `matched_blocks` is the router's view, refreshed at admission."""
        if not self._has_work():
            self.now = max(self.now, req.arrival_s)  # an idle worker starts when work arrives
        req.worker = self.index
        req.prefill_left = self._uncached_tokens(req, matched_blocks)
        self.queued_prefill_tokens += req.prefill_left
        self.waiting.append(req)

    def _uncached_tokens(self, req: SimRequest, matched_blocks: int) -> int:
        cached = min(matched_blocks * self.block_size, req.input_tokens)
        return max(req.input_tokens - cached, 1)

    def _has_work(self) -> bool:
        return bool(self.decoding or self.prefilling or self.waiting)

    # ---- admission and the block cache --------------------------------------------------------

    def _try_admit(self) -> bool:
        if not self.waiting or len(self.decoding) + len(self.prefilling) >= self.max_num_seqs:
            return False
        req = self.waiting[0]
        hashes = req.hash_ids
        matched = self.matched_blocks(hashes)
        total_blocks = math.ceil((req.input_tokens + req.output_tokens) / self.block_size)
        out_blocks = max(total_blocks - len(hashes), 0)
        need = len(hashes) - matched + out_blocks
        free = self.capacity_blocks - len(self.cache) - self.reserved_blocks
        if need > free:
            # Matched blocks that are evictable now become referenced: not room for this one.
            pinned = sum(1 for h in hashes[:matched] if self.cache[h] == 0)
            if need > free + self.eviction.num_evictable() - pinned:
                if not self.decoding and not self.prefilling:
                    self._drop_head()  # would never fit, even alone
                return False
        self.waiting.popleft()
        now = self.now
        for pos in range(matched):
            h = hashes[pos]
            self.cache[h] += 1
            self.eviction.hit(h, _info(req, pos), now)
        if need > free:
            for victim in self.eviction.evict(need - free, now):
                del self.cache[victim]  # type: ignore[arg-type]
        self.reserved_blocks += need
        req.matched_blocks = matched
        req.out_blocks = out_blocks
        fresh = self._uncached_tokens(req, matched)
        self.queued_prefill_tokens += fresh - req.prefill_left
        req.prefill_left = fresh
        self.prefilling.append(req)
        return True

    def _drop_head(self) -> None:
        req = self.waiting.popleft()
        self.queued_prefill_tokens -= req.prefill_left
        req.dropped = True
        self.finished.append(req)

    def _store_prompt_blocks(self, req: SimRequest) -> None:
        now = self.now
        for pos in range(req.matched_blocks, len(req.hash_ids)):
            h = req.hash_ids[pos]
            self.reserved_blocks -= 1
            if h in self.cache:  # stored meanwhile by a request with the same prefix
                self.cache[h] += 1
                self.eviction.hit(h, _info(req, pos), now)
            else:
                self.cache[h] = 1
                self.eviction.insert(h, _info(req, pos), now)

    def _finish(self, req: SimRequest) -> None:
        req.finish_s = self.now
        self.reserved_blocks -= req.out_blocks
        now = self.now
        for h in req.hash_ids:
            left = self.cache[h] - 1
            self.cache[h] = left
            if left == 0:
                self.eviction.release(h, now)
        self.context_tokens -= req.input_tokens + max(req.output_tokens, 1)
        self.finished.append(req)

    # ---- time ---------------------------------------------------------------------------------

    def advance(self, until_s: float) -> None:
        """Run every step that starts before `until_s` (the worker may end a little after it)."""
        while self.now < until_s:
            if not self.prefilling:
                self._try_admit()
            if self.prefilling:
                self._mixed_step()
            elif self.decoding:
                self._decode_stretch(until_s)
            else:
                if self.waiting:
                    continue  # the head was dropped; try the next one
                if until_s != math.inf:
                    self.now = until_s
                return

    def _mixed_step(self) -> None:
        batch = len(self.decoding)
        budget = self.token_budget - batch
        prefill_tokens = 0
        completed: list[SimRequest] = []
        while budget > 0 and (self.prefilling or self._try_admit()):
            req = self.prefilling[0]
            take = min(budget, req.prefill_left)
            req.prefill_left -= take
            budget -= take
            prefill_tokens += take
            if req.prefill_left == 0:
                completed.append(self.prefilling.popleft())
        self.queued_prefill_tokens -= prefill_tokens
        dt = step_time_s(self.cost, prefill_tokens, batch, self.context_tokens)
        self.now += dt
        self.busy_s += dt
        if prefill_tokens:
            self.prefill_busy_s += dt
        self.steps_done += 1
        self.context_tokens += batch
        self._pop_finished()
        for req in completed:
            req.first_token_s = self.now
            self._store_prompt_blocks(req)
            self.context_tokens += req.input_tokens + 1
            if req.output_tokens <= 1:
                self._finish(req)
            else:
                finish_step = self.steps_done + req.output_tokens - 1
                heapq.heappush(self.decoding, (finish_step, req.rid, req))

    def _decode_stretch(self, until_s: float) -> None:
        """Decode-only steps up to the next finish or the first step starting at/after until_s."""
        batch = len(self.decoding)
        k_max = self.decoding[0][0] - self.steps_done
        first = decode_time_s(self.cost, batch, self.context_tokens)
        growth = decode_time_s(self.cost, batch, self.context_tokens + batch) - first
        k = k_max
        if until_s != math.inf:
            k = min(k_max, _steps_to_reach(until_s - self.now, first, growth))
        dt = k * first + growth * k * (k - 1) / 2
        self.now += dt
        self.busy_s += dt
        self.steps_done += k
        self.context_tokens += k * batch
        self._pop_finished()

    def _pop_finished(self) -> None:
        while self.decoding and self.decoding[0][0] <= self.steps_done:
            self._finish(heapq.heappop(self.decoding)[2])


def _info(req: SimRequest, position: int) -> BlockInfo:
    return BlockInfo(turn=req.turn, position=position, conversation=req.conversation)


def _steps_to_reach(span_s: float, first_s: float, growth_s: float) -> int:
    """Least k ≥ 1 with k·first + growth·k(k−1)/2 ≥ span (steps i take first + i·growth)."""
    if span_s <= first_s:
        return 1
    if growth_s <= 0:
        return max(1, math.ceil(span_s / first_s))
    a, b = growth_s / 2, first_s - growth_s / 2
    k = max(1, math.ceil((-b + math.sqrt(b * b + 4 * a * span_s)) / (2 * a)))
    while k > 1 and (k - 1) * first_s + growth_s * (k - 1) * (k - 2) / 2 >= span_s:
        k -= 1
    while k * first_s + growth_s * k * (k - 1) / 2 < span_s:
        k += 1
    return k
