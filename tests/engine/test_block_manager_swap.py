"""`BlockManager.swap_in`: a swapped-out sequence shares again whatever of its blocks the prefix
cache still holds and gets fresh blocks (to be copied back) for the rest; all or nothing."""

import itertools

from gpu_worker.block_manager import BlockManager
from gpu_worker.engine_api import RequestMeta, SamplingParams
from gpu_worker.sequence import Sequence
from policies.eviction import LruPolicy

BS = 4


def manager(num_blocks: int, caching: bool = True) -> BlockManager:
    ticks = itertools.count()
    return BlockManager(num_blocks, BS, LruPolicy(), caching, lambda: float(next(ticks)))


def seq(rid: str, tokens: list[int]) -> Sequence:
    return Sequence(
        request_id=rid,
        token_ids=list(tokens),
        num_prompt_tokens=len(tokens),
        sampling=SamplingParams(max_tokens=4),
        meta=RequestMeta(),
        extra=b"",
        arrival=0,
    )


def compute(bm: BlockManager, s: Sequence, matched: list[int] | None = None) -> None:
    """Admit `s` with `matched` cached blocks and compute all its tokens."""
    bm.admit(s, matched or [])
    assert bm.allocate_slots(s, s.num_tokens - s.num_computed_tokens)
    s.num_computed_tokens = s.num_tokens
    bm.commit(s)


PREFIX = [11, 12, 13, 14, 15, 16, 17, 18]  # two full blocks


def test_resident_prefix_is_shared_only_the_rest_is_fresh():
    bm = manager(8)
    a, b = seq("a", PREFIX + [1, 2]), seq("b", PREFIX + [3, 4, 5])
    compute(bm, a)
    matched = bm.match_prefix(b)
    assert matched == a.block_table[:2]
    compute(bm, b, matched)
    bm.free(b)  # b swapped out: it keeps its computed tokens, holds no block
    fresh = bm.swap_in(b, 1)
    assert fresh == [2]  # only its own partial block comes back from the host
    assert b.block_table[:2] == a.block_table[:2] and len(b.block_table) == 3
    assert bm.ref_counts()[a.block_table[0]] == 2
    b.num_computed_tokens += 1
    bm.commit(b)  # 12 tokens: its third block is full now and enters the cache
    assert bm.num_cached_blocks() == 3


def test_evicted_blocks_come_back_from_the_host():
    bm = manager(6)
    a = seq("a", PREFIX + [1, 2, 3])
    compute(bm, a)  # blocks 0, 1 cached, block 2 partial
    bm.free(a)  # swapped out: tail first to the policy, so LRU gives up block 1 first
    filler = seq("f", list(range(100, 100 + 5 * BS)))  # 5 blocks: 4 free + 1 evicted
    compute(bm, filler)
    bm.free(filler)
    assert bm.num_cached_blocks() == 6  # prefix block 0 + filler's 5
    fresh = bm.swap_in(a, 1)
    # block 0 still cached: shared (claimed before fresh blocks are taken, though it was the
    # least recently released); block 1 was evicted; block 2 was partial
    assert fresh == [1, 2]
    assert a.block_table[0] == 0 and bm.ref_counts().count(1) == 3


def test_without_caching_every_block_is_fresh():
    bm = manager(8, caching=False)
    a = seq("a", PREFIX + [1, 2])
    compute(bm, a)
    bm.free(a)
    assert bm.swap_in(a, 1) == [0, 1, 2]


def test_no_room_changes_nothing():
    bm = manager(4)
    a = seq("a", PREFIX + [1, 2])
    compute(bm, a)
    bm.free(a)
    other = seq("o", list(range(200, 200 + 3 * BS)))
    compute(bm, other)  # holds 3 of 4 blocks; a's cached block 0 is still there
    before = bm.ref_counts()
    assert bm.swap_in(a, 1) is None  # needs 2 fresh blocks, 1 is free
    assert a.block_table == [] and bm.ref_counts() == before
