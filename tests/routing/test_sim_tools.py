"""The routing simulation's tools for judging a change to lmetric (ninth session): replays at
nearby load factors (`--repeats`), the before/after judge, the tail probe, and the
`lmetric_idle_holder` ablation's choices on hand-made fleets."""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks import routing_compare, routing_sim, routing_tail
from benchmarks.fleet_sim import FleetSpec, simulate
from benchmarks.sim_worker import SimRequest
from policies.routing import RequestView, WorkerView, build_routing

sys.path.insert(0, str(Path(__file__).parent))
from test_sim import conversations, hot_prefix  # noqa: E402


def _args(**fields: Any) -> argparse.Namespace:
    base = {
        "trace": None,
        "limit": None,
        "workers": [2],
        "busy": [0.9],
        "capacity_blocks": 40,
        "token_budget": 8192,
        "eviction": '{"type": "lru"}',
        "repeats": 1,
    }
    return argparse.Namespace(**(base | fields))


@pytest.fixture(scope="module")
def trace_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("trace") / "conv.jsonl"
    rows = [
        {
            "timestamp": int(r.arrival_s * 1000),
            "input_length": r.input_tokens,
            "output_length": r.output_tokens,
            "hash_ids": r.hash_ids,
        }
        for r in conversations(40, 5, gap_s=4.0)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_repeat_factors_are_odd_centred_and_within_half_a_percent() -> None:
    assert routing_sim.repeat_factors(2.0, 1) == [2.0]
    fs = routing_sim.repeat_factors(2.0, 5)
    assert len(fs) == 5 and fs[2] == 2.0 and fs == sorted(fs)
    assert fs[0] == pytest.approx(2.0 * (1 - routing_sim.REPEAT_SPREAD))
    assert fs[-1] == pytest.approx(2.0 * (1 + routing_sim.REPEAT_SPREAD))


def test_repeats_keep_the_plain_run_and_add_a_median(trace_path: Path) -> None:
    plain = routing_sim.run_all(_args(trace=trace_path))
    repeated = routing_sim.run_all(_args(trace=trace_path, repeats=3))
    for c0, c3 in zip(plain["cases"], repeated["cases"], strict=True):
        assert c3["repeats"] == 3
        for name, row in c3["policies"].items():
            # the middle replay is the calibrated factor: the same figures as without repeats
            assert {k: v for k, v in row.items() if k in c0["policies"][name]} | {
                "sim_wall_s": 0
            } == c0["policies"][name] | {"sim_wall_s": 0}, name
            assert row["ttft_p99_min_s"] <= row["ttft_p99_median_s"] <= row["ttft_p99_max_s"]
            assert row["ttft_p99_min_s"] <= row["ttft_p99_s"] <= row["ttft_p99_max_s"]


def test_repeats_must_be_odd() -> None:
    with pytest.raises(SystemExit):
        routing_sim.main(["--repeats", "2"])


def _run(lmetric_p99: float, others: dict[str, float], hit: float = 0.3) -> dict[str, Any]:
    policies = {"lmetric": {"ttft_p99_s": lmetric_p99, "hit_ratio": hit, "tpot_p99_s": 0.1}}
    for name, p99 in others.items():
        policies[name] = {"ttft_p99_s": p99, "hit_ratio": 0.2, "tpot_p99_s": 0.1}
    return {
        "cases": [{"num_workers": 4, "cache": "bounded", "target_busy": 0.9, "policies": policies}]
    }


def test_compare_adopts_a_change_that_helps_and_keeps_the_reference_targets() -> None:
    before = {"ref": _run(10.0, {"round_robin": 30.0, "prefix": 12.0})}
    after = {"ref": _run(9.0, {"round_robin": 30.0, "prefix": 12.0}, hit=0.31)}
    traces = {n: routing_compare.compare_pair(before[n], after[n]) for n in before}
    v = routing_compare.verdict(traces, "ref")
    assert v["adopt"] and v["lower"] == 1 and v["higher"] == 0


@pytest.mark.parametrize(
    ("after_p99", "after_hit", "broken"),
    [
        (10.6, 0.3, "no case worse by more than 5 %"),  # +6 %
        (9.0, 0.29, "reference: no hit ratio lower"),
        (11.9, 0.3, "lower in more cases than higher"),  # still best, but higher
        (12.5, 0.3, "reference: best gateway policy in every case"),  # prefix now best
    ],
)
def test_compare_rejects_what_the_rule_forbids(
    after_p99: float, after_hit: float, broken: str
) -> None:
    before = _run(10.0, {"round_robin": 30.0, "prefix": 12.0})
    after = _run(after_p99, {"round_robin": 30.0, "prefix": 12.0}, hit=after_hit)
    v = routing_compare.verdict({"ref": routing_compare.compare_pair(before, after)}, "ref")
    assert not v["adopt"] and not v["rules"][broken]


def test_compare_prefers_medians_over_one_replay() -> None:
    before = _run(10.0, {"round_robin": 30.0})
    after = copy.deepcopy(before)
    after["cases"][0]["policies"]["lmetric"] |= {"ttft_p99_s": 11.0, "ttft_p99_median_s": 9.5}
    (row,) = routing_compare.compare_pair(before, after)
    assert row["p99_after_s"] == 9.5 and row["change"] < 0


def test_tail_probe_describes_the_requests_above_the_p99() -> None:
    trace = conversations(30, 6, gap_s=2.0)
    log = routing_tail.DecisionLog(build_routing())
    kept: list[SimRequest] = []
    result = simulate(trace, log, FleetSpec(num_workers=3, capacity_blocks=60), 1.0, keep=kept)
    assert len(kept) == len(trace) == len(log.decisions)
    tail = routing_tail.describe_tail(kept, log.decisions, share=0.05)
    assert tail["p99_cut_s"] <= max(r.first_token_s - r.arrival_s for r in kept)
    assert tail["requests"] >= len(trace) * 0.05 - 1
    assert tail["mean"]["ttft_s"] >= result.ttft_p50_s
    assert sum(tail["holder_conditions"].values()) == tail["sent_away_from_holder"]


# lmetric_idle_holder: a holder that is only decoding (no queued prefill) keeps a request whose
# first token comes no later there, whatever its batch; lmetric's stall condition sends it away.
REQ = RequestView(num_prompt_tokens=12_800, block_size=512, num_blocks=25)


def _w(i: int, **fields: int) -> WorkerView:
    return WorkerView(worker_id=f"w{i}", **fields)


@pytest.mark.parametrize(
    ("workers", "lmetric", "idle_holder"),
    [
        # holder decoding 6 (no backlog) vs an idle worker: 2,560 vs 12,800 tokens to compute
        ([_w(0, running=6, matched_blocks=20), _w(1)], 1, 0),
        # holder with a backlog: the stall condition still applies, both leave it
        ([_w(0, running=6, queued_prefill_tokens=500, matched_blocks=20), _w(1)], 1, 1),
        # holder's first token would come later: both leave it
        ([_w(0, running=1, queued_prefill_tokens=20_000, matched_blocks=20), _w(1)], 1, 1),
        # nothing cached anywhere: the product decides for both
        ([_w(0, running=6), _w(1, running=1)], 1, 1),
    ],
)
def test_idle_holder_ablation_differs_from_lmetric_only_at_a_holder_without_backlog(
    workers: list[WorkerView], lmetric: int, idle_holder: int
) -> None:
    assert build_routing().select(REQ, workers, 0.0) == lmetric
    assert routing_sim.IdleHolderLMetric().select(REQ, workers, 0.0) == idle_holder


def test_idle_holder_ablation_still_spreads_one_hot_prefix() -> None:
    r = simulate(
        hot_prefix(600, 0.05), routing_sim.IdleHolderLMetric(), FleetSpec(num_workers=4), 1.0
    )
    assert r.load_ratio < 1.5 and r.hit_ratio > 0.8
