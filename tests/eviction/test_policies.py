"""Shared suite against every registered policy (+ Belady), victim-choice tables, Belady optimum."""

from __future__ import annotations

import random

import msgspec
import pytest

from benchmarks.cache_sim import simulate
from benchmarks.mooncake_trace import TraceRequest, derive_metadata
from config.eviction import EvictionConfig
from policies.eviction import REGISTRY, BlockInfo, EvictionPolicy, build_eviction
from policies.eviction.belady import BeladyPolicy, future_uses
from policies.eviction.lru import LruPolicy


def _all_policies() -> list[EvictionPolicy]:
    out = [build_eviction(msgspec.convert({"type": n}, EvictionConfig)) for n in REGISTRY]
    return [*out, BeladyPolicy()]


@pytest.mark.parametrize("policy", _all_policies(), ids=lambda p: p.name)
def test_shared_suite(policy: EvictionPolicy) -> None:
    rng = random.Random(1)
    referenced: set[int] = set()
    tracked: set[int] = set()
    assert policy.evict(0, 0.0) == []
    for step in range(3000):
        now = float(step)
        key = rng.randrange(200)
        info = BlockInfo(position=key % 8, parent=key - 1 if key % 8 else None)
        if key in tracked:
            policy.hit(key, info, now)
        else:
            policy.insert(key, info, now)
            tracked.add(key)
        referenced.add(key)
        if rng.random() < 0.6:  # release some referenced block
            k = rng.choice(sorted(referenced))
            referenced.discard(k)
            policy.release(k, now)
        assert policy.evict(0, now) == []
        if len(tracked) > 50:  # capacity 50: never exceeded, referenced never evicted
            victims = policy.evict(len(tracked) - 50, now)
            assert not set(victims) & referenced
            assert set(victims) <= tracked and len(set(victims)) == len(victims)
            tracked.difference_update(victims)
            assert len(tracked) <= 50 or policy.num_evictable() == 0


@pytest.mark.parametrize(
    ("releases", "expected"),
    [([1, 2, 3], [1, 2]), ([3, 2, 1], [3, 2]), ([2, 1, 3], [2, 1])],
)
def test_lru_victims(releases: list[int], expected: list[int]) -> None:
    p = LruPolicy()
    for t, k in enumerate(releases):
        p.insert(k, BlockInfo(), float(t))
        p.release(k, float(t))
    assert p.evict(2, 10.0) == expected


def test_belady_matches_hand_optimum() -> None:
    # Single-block requests A B C A B D A C, room for 2, every miss is cached (as the engine
    # does). By hand: C evicts B (next use 4 > A's 3); A hits at 3; B evicts C (7 > 6);
    # D evicts B (never again); A hits at 6; C misses. Optimum = 2 hits; LRU gets 0.
    seq = [1, 2, 3, 1, 2, 4, 1, 3]
    reqs = [TraceRequest(float(i), 512, 1, [k]) for i, k in enumerate(seq)]
    derive_metadata(reqs)
    best = simulate(reqs, BeladyPolicy(future_uses(r.hash_ids for r in reqs)), 2)
    assert best.hit_blocks == 2
    assert simulate(reqs, LruPolicy(), 2).hit_blocks == 0
