"""What makes a routing policy's TTFT p99 in one simulated case: the requests above the p99.

    python -m benchmarks.routing_tail --trace /work/wt/_data/agent.jsonl --workers 4 \
        --capacity-blocks 0 --load-factor 1.7637 --policies lmetric cache_aware

For each policy the case is replayed (`benchmarks.fleet_sim.simulate`, the routing_sim model;
`--capacity-blocks 0` means unbounded caches, take `--load-factor` from a routing_sim JSON's
`load_factor`) and the requests whose TTFT is at or above the p99 are described by what the
router saw when it placed them: prompt tokens, tokens computed (uncached at admission), the
chosen worker's queued prefill and load, and the leading blocks given up (held by the best
holder, not by the chosen worker). For the requests that were sent away from a holder, it
counts which of lmetric's two "keep the prefix" conditions held for the holder:
(1) first token no later, `queued + uncached` no larger; (2) stall of the batch in hand,
`uncached × load`, no larger. Prints a table; `--out` writes JSON.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.fleet_sim import FleetSpec, load_trace, simulate
from benchmarks.routing_sim import ABLATIONS, POLICIES, UNBOUNDED_BLOCKS
from benchmarks.sim_worker import SimRequest
from policies.routing import RequestView, RoutingPolicy, WorkerView, build_routing
from policies.routing.lmetric import new_prefill_tokens, uncached_tokens


class DecisionLog(RoutingPolicy):
    """Wraps a policy and keeps every decision's views and choice, in arrival order."""

    def __init__(self, inner: RoutingPolicy) -> None:
        self.inner = inner
        self.name = inner.name
        self.decisions: list[tuple[RequestView, Sequence[WorkerView], int]] = []

    def select(self, request: RequestView, workers: Sequence[WorkerView], now: float) -> int:
        choice = self.inner.select(request, workers, now)
        self.decisions.append((request, workers, choice))
        return choice


def make_policy(name: str) -> RoutingPolicy:
    if name in POLICIES:
        return build_routing(POLICIES[name])
    if name in ABLATIONS:
        return ABLATIONS[name]()
    raise SystemExit(f"unknown policy {name!r}; one of {sorted(POLICIES) + sorted(ABLATIONS)}")


def describe_tail(
    requests: list[SimRequest],
    decisions: list[tuple[RequestView, Sequence[WorkerView], int]],
    share: float = 0.01,
) -> dict[str, Any]:
    ttft = np.array([r.first_token_s - r.arrival_s for r in requests])
    cut = float(np.percentile(ttft, 100 * (1 - share)))
    rows = []
    conditions: Counter[str] = Counter()
    for i, req in enumerate(requests):
        if req.dropped or ttft[i] < cut:
            continue
        view, workers, choice = decisions[i]
        chosen = workers[choice]
        holder = max(workers, key=lambda w: w.matched_blocks)
        lost = holder.matched_blocks - chosen.matched_blocks
        rows.append(
            {
                "ttft_s": float(ttft[i]),
                "prompt_tokens": req.input_tokens,
                "computed_tokens": req.input_tokens
                - min(req.matched_blocks * view.block_size, req.input_tokens),
                "queued_ahead_tokens": chosen.queued_prefill_tokens,
                "load": chosen.load,
                "blocks_given_up": lost,
            }
        )
        if lost > 0:
            first = new_prefill_tokens(view, holder) <= new_prefill_tokens(view, chosen)
            stall = (
                uncached_tokens(view, holder) * holder.load
                <= uncached_tokens(view, chosen) * chosen.load
            )
            tag = f"(1) {'held' if first else 'failed'}, (2) {'held' if stall else 'failed'}"
            conditions[
                tag
                + (", holder had no queued prefill" if holder.queued_prefill_tokens == 0 else "")
            ] += 1
    keys = list(rows[0]) if rows else []
    return {
        "p99_cut_s": cut,
        "requests": len(rows),
        "mean": {k: float(np.mean([r[k] for r in rows])) for k in keys},
        "median": {k: float(np.median([r[k] for r in rows])) for k in keys},
        "sent_away_from_holder": sum(r["blocks_given_up"] > 0 for r in rows),
        "holder_conditions": dict(conditions.most_common()),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", default="../shared/traces/mooncake_conversation.jsonl")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--capacity-blocks", type=int, default=800, help="0 = unbounded")
    parser.add_argument("--load-factor", type=float, required=True)
    parser.add_argument("--policies", nargs="+", default=["lmetric"])
    parser.add_argument("--share", type=float, default=0.01, help="tail share (0.01 = p99)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    trace = load_trace(args.trace)
    spec = FleetSpec(
        num_workers=args.workers, capacity_blocks=args.capacity_blocks or UNBOUNDED_BLOCKS
    )
    out: dict[str, Any] = {}
    for name in args.policies:
        log = DecisionLog(make_policy(name))
        kept: list[SimRequest] = []
        result = simulate(trace, log, spec, args.load_factor, keep=kept)
        tail = describe_tail(kept, log.decisions, args.share)
        out[name] = {"result": result.as_dict(), "tail": tail}
        print(
            f"\n{name}: TTFT p99 {result.ttft_p99_s:.3f} s, TPOT p99 "
            f"{result.tpot_p99_s * 1e3:.0f} ms, hit {result.hit_ratio:.4f}; "
            f"{tail['requests']} requests at or above {tail['p99_cut_s']:.3f} s"
        )
        for stat in ("mean", "median"):
            print(
                f"  {stat:<7}"
                + "  ".join(
                    f"{k} {v:.3f}" if k.endswith("_s") else f"{k} {v:.0f}"
                    for k, v in tail[stat].items()
                )
            )
        print(f"  sent away from a holder: {tail['sent_away_from_holder']}")
        for tag, n in tail["holder_conditions"].items():
            print(f"    {n:>4}  {tag}")
    if args.out:
        args.out.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
