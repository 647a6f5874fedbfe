"""ReuseModel: the Kaplan-Meier counts under censoring, and the value index built on them."""

from __future__ import annotations

import math

import pytest

from config.eviction import WorkloadAwareEviction
from policies.eviction.base import BlockInfo
from policies.eviction.reuse_model import ReuseModel, age_bin
from policies.eviction.workload_aware import WorkloadAwarePolicy


def test_partial_then_closing_observation_equals_one_observation() -> None:
    whole, split = ReuseModel(prior_weight=0.0), ReuseModel(prior_weight=0.0)
    whole.observe("a", 300.0, True)
    counted = split.observe_partial("a", 40.0)  # evicted at 40 s, key still watched
    assert counted == age_bin(40.0)
    split.observe("a", 300.0, True, counted)  # reused at 300 s from the ghost list
    assert whole.num_observations() == split.num_observations() == 1
    assert whole.p_reuse_within("a", 1000.0) == split.p_reuse_within("a", 1000.0) == 1.0


@pytest.mark.parametrize(
    ("reused_share", "higher"),
    [(0.9, "often"), (0.1, "rarely")],
)
def test_index_ranks_the_class_that_comes_back(reused_share: float, higher: str) -> None:
    m = ReuseModel(prior_weight=1.0)
    n = 100
    for i in range(n):
        m.observe("often", 30.0, i < reused_share * n)  # the rest are censored at 30 s
        m.observe("rarely", 30.0, i < (1 - reused_share) * n)
    value = {c: m.reuse_rate_by_age(c, horizon_s=60.0)[age_bin(5.0)] for c in ("often", "rarely")}
    lower = "rarely" if higher == "often" else "often"
    assert value[higher] > 2 * value[lower]


def test_orphan_goes_before_any_valued_block() -> None:
    p = WorkloadAwarePolicy(WorkloadAwareEviction())
    p.insert("head", BlockInfo(position=0), 0.0)
    p.insert("tail", BlockInfo(position=1, parent="head"), 0.0)
    p.insert("other", BlockInfo(position=0), 0.0)
    for k in ("tail", "head", "other"):
        p.release(k, 1.0)
    assert p.evict(1, 2.0) == ["tail"]  # LRU order until learned: the tail was released first
    p.remove("other")
    p.insert("tail", BlockInfo(position=1, parent="head"), 3.0)  # wanted again
    p.release("tail", 3.0)
    assert p.evict(1, 4.0) == ["head"]
    assert p.evict(1, 4.0) == ["tail"]  # its parent is gone: it can never be hit again


def _returns(m: ReuseModel, cls: tuple[int, int], n: int, share: float, seen_s: float) -> None:
    """`n` blocks of `cls`; a `share` of them would come back, spread log-uniformly over 30 s ..
    10 min. A block is watched for `seen_s` only (then evicted and lost from sight)."""
    returning = int(share * n)
    for i in range(n):
        back_s = 30.0 * 20.0 ** (i / max(returning - 1, 1)) if i < returning else math.inf
        if back_s <= seen_s:
            m.observe(cls, back_s, True)
        else:
            m.observe(cls, seen_s, False)


def test_shared_shape_learns_a_class_the_cache_evicts_young() -> None:
    # Classes are (turn, position group); the return-time shape is pooled per position group.
    # A common class, watched for 20 min, shows the shape; a class of which 80 % come back, but
    # which is evicted at 60 s (before most of its returns), shows only its earliest returns.
    estimate = {}
    for shared_shape in (False, True):
        m = ReuseModel(prior_weight=20.0, group=lambda cls: cls[1], shared_shape=shared_shape)
        _returns(m, (0, 0), 3000, 0.2, seen_s=1200.0)
        _returns(m, (5, 0), 200, 0.8, seen_s=60.0)
        assert m.p_reuse_within((0, 0), 3600.0) == pytest.approx(0.2, abs=0.03)
        estimate[shared_shape] = m.p_reuse_within((5, 0), 3600.0)
    # Per age bin, the bins past 60 s hold no data of the class and fall back on the common
    # class's hazard: its early returns are all it keeps (about 0.3). With the shape shared,
    # the early returns say how many will come back (60 s is a fifth of the way).
    assert estimate[True] > estimate[False] + 0.15
    assert estimate[True] < 0.8 + 0.05


def test_classes_that_do_not_share_the_shape_keep_their_own() -> None:
    # Same position group, different return times: one class comes back after ~5 s (an agent
    # loop), the other after ~8 min (a person). Half of each comes back; the rest are watched
    # for 40 min. A shape pooled over both would put half of each class's returns at the
    # wrong time; the group's classes stray from it far beyond binomial noise, so the trust in
    # it falls and each class keeps its own per-bin counts.
    m = ReuseModel(prior_weight=20.0, group=lambda cls: cls[1], shared_shape=True)
    for i in range(2000):
        back = i % 2 == 0
        m.observe(("agent", 0), 5.0 if back else 2400.0, back)
        m.observe(("person", 0), 480.0 if back else 2400.0, back)
    assert m.p_reuse_within(("agent", 0), 10.0) > 0.45
    assert m.p_reuse_within(("person", 0), 10.0) < 0.05
    assert m.p_reuse_within(("person", 0), 600.0) > 0.45
