"""The growth of a turn (how many blocks it added) as a class part: on a workload where a turn
that pastes a document ends its conversation and a short message carries on, the policy that
is told the conversation id keeps the conversations that carry on."""

from __future__ import annotations

import heapq
import random

from benchmarks.cache_sim import simulate
from benchmarks.mooncake_trace import BLOCK_TOKENS, TraceRequest, derive_metadata
from config.eviction import WorkloadAwareEviction
from policies.eviction.base import BlockInfo
from policies.eviction.lru import LruPolicy
from policies.eviction.workload_aware import WorkloadAwarePolicy


def _conversations(num: int, seed: int) -> list[TraceRequest]:
    """`num` conversations, one starting every 2 s on average. A first turn of 4 blocks goes on
    half the time; a later turn adds 1 block (then goes on 9 times in 10) or a 12-block document
    (then ends). Users come back 30-90 s after a turn."""
    rng = random.Random(seed)
    next_block = 0

    def new_blocks(n: int) -> list[int]:
        nonlocal next_block
        next_block += n
        return list(range(next_block - n, next_block))

    events: list[tuple[float, int, list[int]]] = []  # (time, tie-break, prompt blocks)
    start = 0.0
    for c in range(num):
        start += rng.expovariate(0.5)
        t, prompt, goes_on = start, new_blocks(4), rng.random() < 0.5
        for turn in range(8):
            events.append((t, len(events), prompt))
            if not goes_on:
                break
            t += rng.uniform(30.0, 90.0)
            document = turn > 0 and rng.random() < 0.5 or turn == 0 and c % 2 == 0
            prompt = prompt + new_blocks(12 if document else 1)
            goes_on = not document and rng.random() < 0.9
    heapq.heapify(events)
    reqs = []
    while events:
        t, _, prompt = heapq.heappop(events)
        reqs.append(TraceRequest(t, BLOCK_TOKENS * len(prompt), 100, prompt))
    derive_metadata(reqs)
    return reqs


def test_growth_keeps_the_conversations_that_go_on() -> None:
    reqs = _conversations(1200, seed=5)
    capacity = int(0.03 * len({h for r in reqs for h in r.hash_ids}))
    hits = {
        growth: simulate(
            reqs,
            WorkloadAwarePolicy(WorkloadAwareEviction(use_growth=growth)),
            capacity,
            gateway_signals=True,
        ).hit_ratio
        for growth in (False, True)
    }
    lru = simulate(reqs, LruPolicy(), capacity).hit_ratio
    assert hits[True] > 1.05 * hits[False], (hits, lru)
    assert hits[False] > lru, (hits, lru)


def test_growth_is_per_turn_not_per_touch() -> None:
    # The engine touches one request's blocks at several times (hits on admission, inserts per
    # prefill chunk): the growth must stay that of the turn, not fall to 0 at the next touch.
    p = WorkloadAwarePolicy(WorkloadAwareEviction())
    for j in range(4):  # first turn: 4 blocks
        p.insert(j, BlockInfo(turn=0, position=j, conversation=7, prompt_blocks=4), 0.0)
    for j in range(4):
        p.hit(j, BlockInfo(turn=1, position=j, conversation=7, prompt_blocks=16), 60.0)
    for j in range(4, 16):  # the second turn pasted 12 blocks, inserted in two chunks
        now = 61.0 if j < 10 else 62.0
        p.insert(j, BlockInfo(turn=1, position=j, conversation=7, prompt_blocks=16), now)
    growth = {p._meta[j].cls[-1] for j in range(16)}
    assert growth == {3}  # 12 new blocks: the 8+ bucket


def test_growth_counts_tokens_whatever_the_block_size() -> None:
    # The same turn, 12 new blocks: a document (6k tokens) with the trace's 512-token blocks, a
    # short message (192 tokens) with the engine's 16-token blocks.
    def growth(block_tokens: int) -> int:
        p = WorkloadAwarePolicy(WorkloadAwareEviction(), block_tokens)
        for j in range(4):
            p.insert(j, BlockInfo(turn=0, position=j, conversation=7, prompt_blocks=4), 0.0)
        for j in range(4, 16):
            p.insert(j, BlockInfo(turn=1, position=j, conversation=7, prompt_blocks=16), 60.0)
        return p._meta[15].cls[-1]

    assert growth(512) == 3  # 8+ units of 512 tokens
    assert growth(16) == 0  # under one unit
    assert growth(128) == 1  # 1536 tokens: 3 units


def test_turn_hints_out_of_range_share_the_end_classes() -> None:
    """The turn is a client's hint: a negative or huge one must not open a class of its own
    (every class is a table the policy keeps)."""
    p = WorkloadAwarePolicy(WorkloadAwareEviction())
    info = BlockInfo(position=3, prompt_blocks=8)
    first = p.block_class(info._replace(turn=0))
    last = p.block_class(info._replace(turn=10**6))
    assert p.block_class(info._replace(turn=-5)) == first
    assert p.block_class(info._replace(turn=-(10**9))) == first
    assert p.block_class(info._replace(turn=4)) == last != first
