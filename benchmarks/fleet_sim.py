"""A fleet of `SimWorker`s behind one routing policy, replaying a trace (Mooncake format).

The router is the project's own policy object (`policies.routing.build_routing`), called with
the same `RequestView` / `WorkerView` the gateway builds; in the simulation the fleet view is the
workers' truth at the moment of arrival (no event lag).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.mooncake_trace import TraceRequest, derive_metadata
from benchmarks.sim_worker import SimRequest, SimWorker
from config.cost_model import CostModelConfig
from config.eviction import EvictionConfig, LruEviction
from policies.eviction import build_eviction
from policies.routing import RequestView, RoutingPolicy


@dataclass(frozen=True, slots=True)
class TraceRecord:
    arrival_s: float
    input_tokens: int
    output_tokens: int
    hash_ids: list[int]


@dataclass(frozen=True)
class FleetSpec:
    num_workers: int
    capacity_blocks: int = 800
    block_size: int = 512
    token_budget: int = 8192
    max_num_seqs: int = 256
    cost: CostModelConfig = field(default_factory=CostModelConfig)
    eviction: EvictionConfig = field(default_factory=LruEviction)


@dataclass(frozen=True)
class RunResult:
    ttft_p50_s: float
    ttft_p99_s: float
    tpot_p50_s: float
    tpot_p99_s: float
    hit_ratio: float
    load_ratio: float  # busiest worker's time-averaged requests in hand over the fleet mean
    occupied: float  # fleet-mean fraction of the arrival window with a step running
    prefill_busy: float  # fleet-mean fraction of the arrival window in steps carrying prefill
    makespan_s: float  # first arrival to last finish
    dropped: int
    sim_wall_s: float

    def as_dict(self) -> dict[str, float | int]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def load_trace(path: str | Path, limit: int | None = None) -> list[TraceRecord]:
    out: list[TraceRecord] = []
    with open(path) as f:
        for line in f:
            if limit is not None and len(out) >= limit:
                break
            d = json.loads(line)
            out.append(
                TraceRecord(
                    d["timestamp"] / 1000.0, d["input_length"], d["output_length"], d["hash_ids"]
                )
            )
    out.sort(key=lambda r: r.arrival_s)
    return out


def simulate(
    trace: list[TraceRecord],
    policy: RoutingPolicy,
    spec: FleetSpec,
    load_factor: float,
    keep: list[SimRequest] | None = None,
) -> RunResult:
    """Replay `trace` with arrival times divided by `load_factor` (2 = twice as fast). `keep`,
    when given, receives every simulated request (in trace order) for a per-request look."""
    started = time.perf_counter()
    workers = [
        SimWorker(
            i,
            spec.cost,
            build_eviction(spec.eviction, spec.block_size),
            spec.capacity_blocks,
            spec.block_size,
            spec.token_budget,
            spec.max_num_seqs,
        )
        for i in range(spec.num_workers)
    ]
    requests: list[SimRequest] = []
    # The trace has no conversation ids: the same derivation as the eviction study's, from
    # earlier requests only (a shared prefix of any length is told from a conversation's own).
    meta = [TraceRequest(r.arrival_s, r.input_tokens, r.output_tokens, r.hash_ids) for r in trace]
    derive_metadata(meta)
    for rid, rec in enumerate(trace):
        now = rec.arrival_s / load_factor
        req = SimRequest(
            rid,
            now,
            rec.input_tokens,
            rec.output_tokens,
            rec.hash_ids,
            meta[rid].turn,
            meta[rid].conversation,
        )
        requests.append(req)
        for w in workers:
            w.advance(now)
        views = [w.view(rec.hash_ids) for w in workers]
        request_view = RequestView(
            num_prompt_tokens=rec.input_tokens,
            block_size=spec.block_size,
            num_blocks=len(rec.hash_ids),
            max_tokens=rec.output_tokens,
        )
        choice = policy.select(request_view, views, now)
        workers[choice].enqueue(req, views[choice].matched_blocks)
    window_s = max(max(w.now for w in workers), 1e-9)
    busy_in_window = [w.busy_s for w in workers]
    prefill_in_window = [w.prefill_busy_s for w in workers]
    for w in workers:
        w.advance(math.inf)
    if keep is not None:
        keep.extend(requests)
    return _summarise(
        requests,
        spec.num_workers,
        busy_in_window,
        prefill_in_window,
        window_s,
        time.perf_counter() - started,
    )


def _summarise(
    requests: list[SimRequest],
    num_workers: int,
    busy_s: list[float],
    prefill_busy_s: list[float],
    window_s: float,
    wall_s: float,
) -> RunResult:
    done = [r for r in requests if not r.dropped]
    # Little's law: the time integral of a worker's requests in hand is the sum of their sojourns.
    in_hand = [0.0] * num_workers
    for r in done:
        in_hand[r.worker] += r.finish_s - r.arrival_s
    mean_in_hand = sum(in_hand) / num_workers
    # (a zero keeps the percentiles defined when nothing finished or no output had 2 tokens)
    ttft = np.array([r.first_token_s - r.arrival_s for r in done] or [0.0])
    tpot = np.array(
        [
            (r.finish_s - r.first_token_s) / (r.output_tokens - 1)
            for r in done
            if r.output_tokens > 1
        ]
        or [0.0]
    )
    hit = sum(r.matched_blocks for r in done) / max(sum(len(r.hash_ids) for r in requests), 1)
    mean_busy = float(np.mean(busy_s))
    return RunResult(
        ttft_p50_s=float(np.percentile(ttft, 50)),
        ttft_p99_s=float(np.percentile(ttft, 99)),
        tpot_p50_s=float(np.percentile(tpot, 50)),
        tpot_p99_s=float(np.percentile(tpot, 99)),
        hit_ratio=hit,
        load_ratio=max(in_hand) / mean_in_hand if mean_in_hand > 0 else 1.0,
        occupied=mean_busy / window_s,
        prefill_busy=float(np.mean(prefill_busy_s)) / window_s,
        makespan_s=max((r.finish_s for r in done), default=0.0),
        dropped=len(requests) - len(done),
        sim_wall_s=wall_s,
    )
