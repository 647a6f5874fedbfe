"""KV cache eviction study: prefix hit ratio against cache capacity, one line per policy.

    python -m benchmarks.cache_study [TRACE] [--out results.json] [--png docs/img/cache_study.png]
    python -m benchmarks.cache_study --synthetic 20000 --out synth.json --png synth.png

Replays a Mooncake-format trace (default ../shared/traces/mooncake_conversation.jsonl) through
one cache of C blocks per policy, with C = 2, 5, 10, 20, 40 % of the trace's distinct blocks.
Policies see only what a serving system knows at run time; "+turn" rows also get the turn number
the gateway can pass, "+gw" rows the turn and the conversation id (from which the policy takes
how many blocks each turn added). Belady is the offline optimum (it is handed the future).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from tqdm import tqdm

from benchmarks.cache_sim import PrefixCacheSim
from benchmarks.mooncake_trace import TraceRequest, ideal_hit_ratio, read_trace
from benchmarks.synthetic_workload import generate
from config.eviction import WorkloadAwareEviction
from policies.eviction.base import EvictionPolicy
from policies.eviction.belady import BeladyPolicy, future_uses
from policies.eviction.lfu import LfuPolicy
from policies.eviction.lru import LruPolicy
from policies.eviction.workload_aware import WorkloadAwarePolicy

DEFAULT_TRACE = "../shared/traces/mooncake_conversation.jsonl"
CAPACITY_FRACTIONS = (0.02, 0.05, 0.10, 0.20, 0.40)
Factory = Callable[[list[TraceRequest]], EvictionPolicy]

# name -> (factory, gateway signals passed to the policy)
POLICIES: dict[str, tuple[Factory, bool]] = {
    "lru": (lambda reqs: LruPolicy(), False),
    "lfu": (lambda reqs: LfuPolicy(), False),
    "structure_only": (
        lambda reqs: WorkloadAwarePolicy(WorkloadAwareEviction(learned=False)),
        False,
    ),
    "workload_aware": (lambda reqs: WorkloadAwarePolicy(WorkloadAwareEviction()), False),
    "workload_aware+turn": (
        lambda reqs: WorkloadAwarePolicy(WorkloadAwareEviction(use_growth=False)),
        True,
    ),
    "workload_aware+gw": (lambda reqs: WorkloadAwarePolicy(WorkloadAwareEviction()), True),
    "workload_aware+gw+conversation": (
        lambda reqs: WorkloadAwarePolicy(WorkloadAwareEviction(use_conversation=True)),
        True,
    ),
    "belady": (lambda reqs: BeladyPolicy(future_uses(r.hash_ids for r in reqs)), True),
}


def run_one(reqs: list[TraceRequest], name: str, capacity: int) -> dict[str, float]:
    factory, gateway = POLICIES[name]
    sim = PrefixCacheSim(factory(reqs), capacity, gateway_signals=gateway)
    t0 = time.perf_counter()
    for r in reqs:
        sim.serve(r)
    res = sim.result()
    return {
        "hit_ratio": res.hit_ratio,
        "evictions": res.evictions,
        "wall_s": time.perf_counter() - t0,
        "capacity_blocks": capacity,
    }


def study(reqs: list[TraceRequest], policies: list[str], jobs: int = 1) -> dict[str, object]:
    """Every (policy, capacity) replay; `jobs` > 1 runs them in that many processes."""
    distinct = len({h for r in reqs for h in r.hash_ids})
    capacities = [max(1, int(f * distinct)) for f in CAPACITY_FRACTIONS]
    tasks = [
        (name, f"{f:.2f}", cap)
        for name in policies
        for f, cap in zip(CAPACITY_FRACTIONS, capacities, strict=True)
    ]
    results: dict[str, dict[str, dict[str, float]]] = {name: {} for name in policies}
    with tqdm(total=len(tasks), unit="replay", file=sys.stderr) as bar:
        if jobs <= 1:
            for name, frac, cap in tasks:
                bar.set_description(f"{name} @ {float(frac):.0%}")
                results[name][frac] = run_one(reqs, name, cap)
                bar.update()
        else:
            with ProcessPoolExecutor(jobs) as pool:
                futures = {
                    pool.submit(run_one, reqs, name, cap): (name, frac) for name, frac, cap in tasks
                }
                for fut in as_completed(futures):
                    name, frac = futures[fut]
                    results[name][frac] = fut.result()
                    bar.update()
    results = {n: dict(sorted(row.items())) for n, row in results.items()}
    return {
        "requests": len(reqs),
        "block_refs": sum(len(r.hash_ids) for r in reqs),
        "distinct_blocks": distinct,
        "ideal_hit_ratio": ideal_hit_ratio(reqs),
        "capacity_fractions": list(CAPACITY_FRACTIONS),
        "results": results,
    }


def table(out: dict[str, object]) -> str:
    results: dict[str, dict[str, dict[str, float]]] = out["results"]  # type: ignore[assignment]
    fracs = [f"{f:.2f}" for f in CAPACITY_FRACTIONS]
    lru = results.get("lru")
    head = "| policy | " + " | ".join(f"C = {float(f):.0%}" for f in fracs) + " |"
    lines = [head, "|" + " --- |" * (len(fracs) + 1)]
    for name, row in results.items():
        cells = []
        for f in fracs:
            h = row[f]["hit_ratio"]
            cell = f"{h:.4f}"
            if lru is not None and name != "lru" and lru[f]["hit_ratio"] > 0:
                cell += f" ({h / lru[f]['hit_ratio'] - 1:+.1%})"
            cells.append(cell)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    caps = [str(int(results[next(iter(results))][f]["capacity_blocks"])) for f in fracs]
    lines.append("| *(blocks)* | " + " | ".join(caps) + " |")
    return "\n".join(lines)


def plot(out: dict[str, object], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results: dict[str, dict[str, dict[str, float]]] = out["results"]  # type: ignore[assignment]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, row in results.items():
        xs = [100 * float(f) for f in row]
        ax.plot(
            xs,
            [v["hit_ratio"] for v in row.values()],
            marker="o",
            label=name,
            linestyle="--" if name == "belady" else "-",
        )
    ax.axhline(float(out["ideal_hit_ratio"]), color="grey", linewidth=0.8, label="unbounded cache")  # type: ignore[arg-type]
    ax.set_xscale("log")
    ax.minorticks_off()  # log-axis minor labels (3x10^0 ...) overlap the named ticks
    ax.set_xticks([2, 5, 10, 20, 40], labels=["2", "5", "10", "20", "40"])
    ax.set_xlabel("cache capacity (% of the trace's distinct blocks)")
    ax.set_ylabel("prefix hit ratio")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("trace", nargs="?", default=DEFAULT_TRACE)
    ap.add_argument(
        "--synthetic",
        type=int,
        default=0,
        metavar="N",
        help="use N requests of the synthetic workload instead of a trace",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=None, help="first N requests of the trace")
    ap.add_argument("--policies", default=",".join(POLICIES))
    ap.add_argument("--jobs", type=int, default=1, help="replays run in this many processes")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--png", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.synthetic:
        reqs, source = generate(args.synthetic, seed=args.seed), f"synthetic ({args.synthetic})"
    else:
        reqs, source = read_trace(args.trace, args.limit), Path(args.trace).name
    out = study(reqs, [p for p in args.policies.split(",") if p], args.jobs)
    out["source"] = source
    print(
        f"{source}: {out['requests']} requests, {out['block_refs']} block refs, "
        f"{out['distinct_blocks']} distinct blocks, unbounded hit ratio "
        f"{out['ideal_hit_ratio']:.4f}"
    )
    print(table(out))
    if args.out:
        args.out.write_text(json.dumps(out, indent=2))
    if args.png:
        plot(out, args.png, f"Prefix hit ratio vs capacity — {source}")


if __name__ == "__main__":
    main()
