"""The routing simulation on small traces made here: conservation, locality, the hot prefix."""

from __future__ import annotations

import random

import msgspec
import pytest

from benchmarks.fleet_sim import FleetSpec, TraceRecord, simulate
from config.routing import RoutingConfig
from policies.routing import REGISTRY, build_routing


def conversations(num: int, turns: int, gap_s: float, seed: int = 0) -> list[TraceRecord]:
    """`num` conversations whose every turn extends the previous prompt by 1-3 blocks."""
    rng = random.Random(seed)
    out: list[TraceRecord] = []
    next_id = 1
    for c in range(num):
        blocks = [0]  # a shared system prompt block
        t = c * gap_s / 3
        for _ in range(turns):
            for _ in range(rng.randint(1, 3)):
                blocks.append(next_id)
                next_id += 1
            out.append(TraceRecord(t, len(blocks) * 512, rng.randint(20, 80), list(blocks)))
            t += gap_s * rng.uniform(0.5, 1.5)
    return sorted(out, key=lambda r: r.arrival_s)


def hot_prefix(num: int, gap_s: float, hot_blocks: int = 12) -> list[TraceRecord]:
    """Every request shares one long prefix and adds one block of its own."""
    hot = list(range(hot_blocks))
    return [
        TraceRecord(i * gap_s, (hot_blocks + 1) * 512, 40, [*hot, 1000 + i]) for i in range(num)
    ]


def run(name: str, trace: list[TraceRecord], workers: int = 4, **spec: int):
    policy = build_routing(msgspec.convert({"type": name}, RoutingConfig))
    return simulate(trace, policy, FleetSpec(num_workers=workers, **spec), load_factor=1.0)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_request_finishes_and_numbers_are_sane(name):
    trace = conversations(20, 4, gap_s=2.0)
    r = run(name, trace, capacity_blocks=200)
    assert r.dropped == 0
    assert 0.0 < r.ttft_p50_s <= r.ttft_p99_s
    assert 0.0 < r.tpot_p50_s <= r.tpot_p99_s
    assert 0.0 <= r.hit_ratio < 1.0
    assert r.load_ratio >= 1.0
    again = run(name, trace, capacity_blocks=200).as_dict()
    assert {**again, "sim_wall_s": 0} == {**r.as_dict(), "sim_wall_s": 0}  # deterministic


def test_a_request_too_big_for_the_cache_is_dropped_not_stuck():
    trace = [TraceRecord(0.0, 512 * 10, 5, list(range(10))), TraceRecord(0.1, 512, 5, [99])]
    r = run("round_robin", trace, workers=1, capacity_blocks=4)
    assert r.dropped == 1


def test_cache_aware_policies_reuse_more_than_round_robin():
    trace = conversations(40, 5, gap_s=4.0)
    base = run("round_robin", trace).hit_ratio
    for name in ("lmetric", "prefix", "weighted", "cache_aware"):
        assert run(name, trace).hit_ratio > base + 0.1, name


def test_one_hot_prefix_makes_prefix_routing_a_hotspot_and_lmetric_spreads_it():
    # 20 requests/s of 6.6k-token prompts: more than one worker can prefill even with the prefix.
    trace = hot_prefix(300, gap_s=0.05)
    prefix, lmetric = run("prefix", trace), run("lmetric", trace)
    assert prefix.load_ratio > 2.0  # everything on the first holder
    assert lmetric.load_ratio < 1.5
    assert lmetric.ttft_p99_s < 0.5 * prefix.ttft_p99_s
    assert lmetric.hit_ratio > 0.8  # replicated on a few workers, still reused
