"""The trace tools on traces other than the conversation trace: small traces generated here by
`benchmarks.make_trace` (agent and document shapes), checked for what must hold on any trace."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from benchmarks import cache_study, routing_sim
from benchmarks.make_trace import BLOCK_TOKENS, parser, write_trace
from benchmarks.mooncake_trace import TraceRequest, derive_metadata, ideal_hit_ratio, read_trace


def _make(tmp_path: Path, shape: str, requests: int, *extra: str) -> Path:
    out = tmp_path / f"{shape}.jsonl"
    args = parser().parse_args([shape, str(out), "--requests", str(requests), *extra])
    assert write_trace(args) == requests
    return out


@pytest.fixture(scope="module")
def traces(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("traces")
    return {
        # short hour-scale traces: a few hundred requests each
        "agent": _make(tmp, "agent", 400, "--duration-s", "600", "--apps", "3"),
        "docs": _make(tmp, "docs", 400, "--duration-s", "600", "--hot-docs", "20"),
    }


def test_generated_trace_is_mooncake_format_and_seeded(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = _make(tmp_path / "a", "docs", 200), _make(tmp_path / "b", "docs", 200)
    assert a.read_bytes() == b.read_bytes()  # same seed, same trace
    rows = [json.loads(line) for line in a.read_text().splitlines()]
    times = [r["timestamp"] for r in rows]
    assert times == sorted(times)
    first_seen: dict[int, tuple[int, ...]] = {}
    for r in rows:
        ids = r["hash_ids"]
        assert len(ids) == -(-r["input_length"] // BLOCK_TOKENS)  # 512-token blocks, last partial
        for j, h in enumerate(ids):  # chained: an id names its whole prefix
            assert first_seen.setdefault(h, tuple(ids[:j])) == tuple(ids[:j])


def test_shared_prompt_is_not_one_conversation() -> None:
    # Three sessions share a 4-block application prompt; each first turn ends inside the
    # prompt's blocks (its own text is the partial last block), then goes on for a turn.
    app = [0, 1, 2, 3]
    extra = [100, 300, 50]  # tokens of each session's first message
    reqs: list[TraceRequest] = []
    for s in range(3):
        reqs.append(TraceRequest(float(s), 4 * BLOCK_TOKENS + extra[s], 50, [*app, 100 + 10 * s]))
    for s in range(3):
        turn1 = [*app, 101 + 10 * s, 102 + 10 * s]
        reqs.append(TraceRequest(10.0 + s, 5 * BLOCK_TOKENS + 100, 50, turn1))
        reqs.append(
            TraceRequest(20.0 + s, 6 * BLOCK_TOKENS + 100, 50, [*turn1[:-1], 103 + 10 * s, 7])
        )
    derive_metadata(reqs)
    # The second session's first turn is longer than the first's and ends on the same blocks:
    # block ids and lengths cannot tell it from a next turn. The third is shorter, so the
    # prompt is seen to branch and from then on it is a shared prefix, not a history.
    assert reqs[2].turn == 0 and reqs[2].conversation != reqs[0].conversation
    for s in range(3):
        turn1, turn2 = reqs[3 + 2 * s], reqs[4 + 2 * s]
        assert turn2.parent_index == 3 + 2 * s and turn2.conversation == turn1.conversation
    assert len({reqs[4 + 2 * s].conversation for s in range(3)}) == 3


def test_short_turn_that_adds_no_full_block_still_continues() -> None:
    # Turn 2 adds under a block (same last full block as turn 1); turn 3 goes on from turn 2.
    reqs = [
        TraceRequest(0.0, 2 * BLOCK_TOKENS + 100, 50, [0, 1, 2]),
        TraceRequest(30.0, 2 * BLOCK_TOKENS + 300, 50, [0, 1, 3]),
        TraceRequest(60.0, 3 * BLOCK_TOKENS + 200, 50, [0, 1, 4, 5]),
    ]
    derive_metadata(reqs)
    assert [r.turn for r in reqs] == [0, 1, 2]
    assert len({r.conversation for r in reqs}) == 1


def test_derived_conversations_follow_the_sessions(traces: dict[str, Path]) -> None:
    truth = [json.loads(line) for line in traces["agent"].read_text().splitlines()]
    reqs = read_trace(traces["agent"])
    sessions = {t["session"] for t in truth}
    conversations = {r.conversation for r in reqs}
    # links join requests of one session (a shared application prompt does not merge them)
    links = [(i, r.parent_index) for i, r in enumerate(reqs) if r.parent_index is not None]
    same = sum(truth[i]["session"] == truth[p]["session"] for i, p in links)
    assert same >= 0.9 * len(links)
    assert len(conversations) >= 0.8 * len(sessions)


@pytest.mark.parametrize("shape", ["agent", "docs"])
def test_cache_study_invariants(traces: dict[str, Path], shape: str) -> None:
    reqs = read_trace(traces[shape])
    out = cache_study.study(reqs, ["lru", "workload_aware+gw", "belady"])
    ideal = ideal_hit_ratio(reqs)
    assert out["ideal_hit_ratio"] == pytest.approx(ideal)
    results = out["results"]
    for frac in results["lru"]:
        best = results["belady"][frac]["hit_ratio"]
        for name, row in results.items():
            assert 0.0 <= row[frac]["hit_ratio"] <= ideal + 1e-12, (name, frac)
            assert row[frac]["hit_ratio"] <= best + 1e-12, (name, frac)
    belady = [row["hit_ratio"] for row in results["belady"].values()]
    assert belady == sorted(belady)  # the optimum never loses from more room
    # a cache that holds every distinct block is the unbounded ideal, for any policy
    distinct = out["distinct_blocks"]
    full = cache_study.run_one(reqs, "lru", int(distinct))
    assert full["hit_ratio"] == pytest.approx(ideal)


def test_routing_sim_on_a_small_trace(traces: dict[str, Path]) -> None:
    args = argparse.Namespace(
        trace=traces["docs"],
        limit=300,
        workers=[2],
        busy=[0.6, 0.9],
        capacity_blocks=200,
        token_budget=8192,
        eviction='{"type": "lru"}',
    )
    result = routing_sim.run_all(args)
    ideal = result["ideal_hit_ratio"]
    assert ideal == pytest.approx(ideal_hit_ratio(read_trace(traces["docs"], 300)))
    assert len(result["checks"]) == len(result["cases"]) == 4
    for case in result["cases"]:
        for name, r in case["policies"].items():
            assert r["dropped"] == 0, name
            assert r["hit_ratio"] <= ideal + 1e-12, name
    busy = {(c["cache"], c["target_busy"]): c["policies"]["round_robin"] for c in result["cases"]}
    # the calibration scales load: more offered work, more of the window spent prefilling
    assert busy["bounded", 0.9]["prefill_busy"] > busy["bounded", 0.6]["prefill_busy"]


def test_routing_sim_rejects_a_trace_with_no_time_span(tmp_path: Path) -> None:
    path = tmp_path / "burst.jsonl"
    row = {"timestamp": 0, "input_length": 600, "output_length": 4, "hash_ids": [1, 2]}
    path.write_text("\n".join(json.dumps(row) for _ in range(3)) + "\n")
    args = argparse.Namespace(
        trace=path, limit=None, workers=[2], busy=[0.6], capacity_blocks=100,
        token_budget=8192, eviction='{"type": "lru"}',
    )  # fmt: skip
    with pytest.raises(ValueError, match="all arrive at once"):
        routing_sim.run_all(args)
