"""Per-category thresholds against one global threshold, judged leave-one-set-out (LOSO).

    python benchmarks/semantic_pooled_thresholds.py \
        --sets dev=../shared/semantic/dev_prompts.jsonl,h1=benchmarks/data/holdout_prompts.jsonl,...
        [--candidate pooled+near+idf+reach+synonym+filler] [--cut 0.5] [--orders 5]
        [--inner-folds 3] [--memo /tmp/kvgate_pooled_memo.pkl] [--out FILE]

Issue #6 asks that per-category thresholds beat the best single global threshold. On the dev set
alone they did not (sessions 1 and 3): 60–130 prompts per category per training set, and the
per-category choice swung between folds. With several independently written sets pooled there
are five to seven times as many. For each set left out in turn:

1. the guard recipe (`--candidate`, the default guard's by default) is fitted on the other sets;
2. a grid of tallies by threshold and category (at the shipped probability cut) comes from a
   cross-validation by cluster group inside the other sets: each inner fold replayed through
   the real cache, one set at a time, by the recipe fitted on the other inner folds (as
   `semantic_pooled.py` chooses its `+chosen` setting);
3. from that grid: the best global threshold, the best threshold per category, and the
   hierarchical per-category choice (each category's tally pooled with the global one,
   `choose_per_category_shrunk`); the shipped threshold is scored as well;
4. the left-out set is replayed in `--orders` seeded orders with each, tallies summed.

Tallies are kept by the category the cache's categorizer gives a prompt (what a per-category
threshold is applied by), not by its label. Nothing is chosen by looking at a left-out set.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.semantic_contrast import contrast_checks  # noqa: E402
from benchmarks.semantic_pooled import Pooled  # noqa: E402
from benchmarks.semantic_pooled_fit import Candidate, fit_candidate  # noqa: E402
from benchmarks.semantic_quality import (  # noqa: E402
    EMBED_KWARGS,
    TRAIN_THRESHOLDS,
    Evaluator,
    MemoModel,
    Tallies,
    choose_global,
    choose_per_category,
    choose_per_category_shrunk,
    merge,
    total,
)
from config.semantic import SemanticCacheConfig  # noqa: E402
from gateway.semantic.embedder import load_model  # noqa: E402

DEFAULT_RECIPE = "pooled+near+idf+reach+synonym+filler"
Grid = dict[tuple[float, float], Tallies]


def by_assigned_category(pooled: Pooled, memo: MemoModel) -> None:
    """Re-label every prompt with the category the shipped categorizer gives it."""
    ev = pooled.ev
    vectors = memo.encode([r["prompt"] for r in ev.rows], **EMBED_KWARGS)
    rows = [
        {**row, "category": ev.categorizer.categorize(row["prompt"], vectors[i])}
        for i, row in enumerate(ev.rows)
    ]
    pooled.ev = Evaluator(rows, memo, ev.categorizer, ev.known_words, ev.contrast_checks)


async def inner_grid(
    pooled: Pooled, train: list[str], cand: Candidate, folds: int, cut: float
) -> Grid:
    """Tallies by threshold (at `cut`) from cross-validation by cluster group inside `train`."""
    everything = [i for name in train for i in pooled.indices(name)]
    group_ids = sorted({pooled.data.groups[i] for i in everything})
    random.Random(0).shuffle(group_ids)
    fold_of = {g: k % folds for k, g in enumerate(group_ids)}
    grid: Grid = {}
    for k in range(folds):
        inside = [i for i in everything if fold_of[pooled.data.groups[i]] != k]
        model, _ = fit_candidate(inside, pooled.data, cand)
        for name in train:
            order = [i for i in pooled.order(name, 0) if fold_of[pooled.data.groups[i]] == k]
            for t in TRAIN_THRESHOLDS:
                tallies = (await pooled.ev.replay(order, t, "learned", cut, model))[0]
                merge(grid.setdefault((t, cut), {}), tallies)
    return grid


def grid_summary(grid: Grid) -> dict[str, dict[str, list[int]]]:
    """Per threshold, per category: [correct, false] hits of the inner cross-validation."""
    return {
        f"{t:.2f}": {c: [x.hits - x.false_hits, x.false_hits] for c, x in sorted(tallies.items())}
        for (t, _), tallies in sorted(grid.items())
    }


def cell(tallies: Tallies, thresholds: object) -> dict[str, object]:
    t = total(tallies)
    correct = t.hits - t.false_hits
    return {
        "correct": correct,
        "false": t.false_hits,
        "value": correct - 5 * t.false_hits,
        "hit_rate": round(t.hit_rate, 4),
        "false_rate": round(t.false_rate, 4),
        "thresholds": thresholds,
    }


async def loso(args: argparse.Namespace, memo: MemoModel) -> dict[str, object]:
    sets = [tuple(s.split("=", 1)) for s in args.sets.split(",")]
    pooled = Pooled(sets, memo, contrast_checks(args))  # type: ignore[arg-type]
    by_assigned_category(pooled, memo)
    cand = Candidate.parse(args.candidate)
    shipped_threshold = SemanticCacheConfig().categories["chat"].threshold
    results: dict[str, dict[str, object]] = {}
    for name in args.leave_out.split(",") if args.leave_out else pooled.names:
        start = time.monotonic()
        train = [n for n in pooled.names if n != name]
        everything = [i for n in train for i in pooled.indices(n)]
        model, _ = fit_candidate(everything, pooled.data, cand)
        grid = await inner_grid(pooled, train, cand, args.inner_folds, args.cut)
        choices: dict[str, float | dict[str, float]] = {
            "shipped": shipped_threshold,
            "global": choose_global(grid)[0],
            "per_category": choose_per_category(grid, args.cut),
            "hierarchical": choose_per_category_shrunk(grid, args.cut),
        }
        row: dict[str, object] = {"grid": grid_summary(grid)}
        for label, thresholds in choices.items():
            tallies = await pooled.score(name, args.orders, model, (thresholds, args.cut))  # type: ignore[arg-type]
            row[label] = cell(tallies, thresholds)
        row["seconds"] = round(time.monotonic() - start, 1)
        print(f"{name}: {row}", flush=True)
        results[name] = row
    return {"sets": dict(sets), "candidate": cand.name, "cut": args.cut, "results": results}


def print_report(report: dict[str, object]) -> None:
    results: dict[str, dict[str, dict[str, object]]] = report["results"]  # type: ignore[assignment]
    labels = ("shipped", "global", "per_category", "hierarchical")
    print("\nleft-out | " + " | ".join(labels) + "   (correct, false; correct - 5 x false)")
    sums = {label: [0, 0, 0] for label in labels}
    for held, row in results.items():
        cells = []
        for label in labels:
            c = row[label]
            cells.append(f"{c['correct']}, {c['false']}; {c['value']}")
            for k, key in enumerate(("correct", "false", "value")):
                sums[label][k] += c[key]  # type: ignore[operator]
        print(f"{held:4s} | " + " | ".join(cells))
    print("sum  | " + " | ".join(f"{a}, {b}; {v}" for a, b, v in sums.values()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sets", required=True, help="name=path,... (at least two)")
    parser.add_argument("--candidate", default=DEFAULT_RECIPE)
    parser.add_argument("--leave-out", default="", help="sets to leave out (default: each)")
    parser.add_argument("--cut", type=float, default=SemanticCacheConfig().guard.min_probability)
    parser.add_argument("--orders", type=int, default=5)
    parser.add_argument("--inner-folds", type=int, default=3)
    parser.add_argument("--checks", default=None, help="contrast checks (default: shipped)")
    parser.add_argument("--memo", default="/tmp/kvgate_pooled_memo.pkl")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    memo = MemoModel(load_model(SemanticCacheConfig().embedder)).load(args.memo)
    try:
        report = asyncio.run(loso(args, memo))
    finally:
        memo.save(args.memo)
    print_report(report)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1, default=float) + "\n")


if __name__ == "__main__":
    main()
