"""The guard's existing off-by-default options, each scored on the independent holdout set.

    python benchmarks/semantic_options_holdout.py --data ../shared/semantic/dev_prompts.jsonl \
        [--holdout benchmarks/data/holdout_prompts.jsonl] [--orders 5] [--order-sets 0,5] \
        [--options typo_vocab,margin,tokens,alignment,per_category,rules,cost] [--out FILE]

Scored exactly as `semantic_eval.py holdout` scores the shipped guard: nothing is chosen on the
holdout set. Each option is one change on top of the shipped guard (its weights file, cut and
threshold from `SemanticCacheConfig`); whatever the option needs (refitted weights, a cut and
threshold, a margin, per-category thresholds) is fitted or chosen on the whole dev set, replayed
in the `--dev-seed` order with the choice rule of semantic_quality.py. The holdout set is then
replayed through the real `SemanticCache` in `--orders` seeded orders per order set (seeds
start, start + 1, ...) and the tallies summed; the shipped guard is the baseline of the same run.

`cost`: the (threshold, cut) the dev set picks for the shipped weights when a false hit costs
`k` correct hits (objective correct - k x false, no 2 % budget), for each k of `--costs`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.semantic_guard_fit import fit_guard  # noqa: E402
from benchmarks.semantic_quality import (  # noqa: E402
    CUTS,
    EMBED_KWARGS,
    MARGINS,
    THRESHOLDS,
    TRAIN_THRESHOLDS,
    Evaluator,
    MemoModel,
    Tallies,
    choose_global,
    choose_per_category,
    choose_per_category_shrunk,
    load_rows,
    merge,
    shipped_categorizer,
    table,
    total,
    value,
)
from config.semantic import SemanticCacheConfig  # noqa: E402
from gateway.semantic.cache import shipped_guard_weights  # noqa: E402
from gateway.semantic.embedder import load_model  # noqa: E402
from policies.semantic.guard import GuardModel, span_similarity_from  # noqa: E402
from policies.semantic.pair_features import prompt_terms  # noqa: E402
from policies.semantic.token_alignment import TokenStateCache  # noqa: E402
from policies.semantic.word_alignment import WordVectors  # noqa: E402

Grid = dict[tuple[float, float], Tallies]
ALL_OPTIONS = "typo_vocab,margin,tokens,alignment,per_category,rules,cost"


@dataclass
class Variant:
    """One guard configuration, everything in it fixed before the holdout set is replayed."""

    mode: str
    thresholds: float | dict[str, float]
    cut: float
    model: GuardModel | None
    margin: float | None = None
    typo_vocab: bool = False
    # False: per-category thresholds (no single threshold to sweep).
    sweep: bool = True
    note: dict[str, object] = field(default_factory=dict)


def choose_weighted(grid: Grid, false_cost: float) -> tuple[float, float]:
    """The (threshold, cut) with the most correct - `false_cost` x false hits; ties go to the
    stricter threshold, then the higher cut (the safer setting)."""

    def score(key: tuple[float, float]) -> tuple[float, float, float]:
        t = total(grid[key])
        return (t.hits - t.false_hits - false_cost * t.false_hits, key[0], key[1])

    return max(grid, key=score)


async def dev_variants(args: argparse.Namespace, ctx: dict[str, object]) -> dict[str, Variant]:
    """Every variant, each fitted and chosen on the whole dev set only."""
    base = SemanticCacheConfig()
    (shipped_t,) = {p.threshold for p in base.categories.values()}
    shipped_cut = base.guard.min_probability
    shipped = GuardModel.from_json(shipped_guard_weights())
    dev_ev: Evaluator = ctx["dev_ev"]  # type: ignore[assignment]
    order: list[int] = ctx["dev_order"]  # type: ignore[assignment]
    options = set(args.options.split(","))
    out = {"shipped": Variant("learned", shipped_t, shipped_cut, shipped)}

    async def grid_of(model: GuardModel, ev: Evaluator = dev_ev) -> Grid:
        return {
            (t, c): (await ev.replay(order, t, "learned", c, model))[0]
            for t in TRAIN_THRESHOLDS
            for c in CUTS
        }

    if "typo_vocab" in options:
        # As the cache option runs it: the shipped weights, cut and threshold, plus the check.
        out["typo_vocab"] = Variant("learned", shipped_t, shipped_cut, shipped, typo_vocab=True)
    if "margin" in options:
        by_margin: dict[float | None, Tallies] = {}
        for m in [None, *MARGINS]:
            res = await dev_ev.replay(order, shipped_t, "learned", shipped_cut, shipped, m)
            by_margin[m] = res[0]
        chosen = max(by_margin, key=lambda m: (*value(total(by_margin[m])), m is None))
        note = {"dev_choice": chosen, "dev": {str(m): total(t).row() for m, t in by_margin.items()}}
        for m in MARGINS:
            out[f"margin_{m}"] = Variant("learned", shipped_t, shipped_cut, shipped, m, note=note)
    refits = [o for o in ("tokens", "alignment") if o in options]
    for name in refits:
        model = fit_guard(
            order,
            ctx["similarity"],  # type: ignore[arg-type]
            ctx["terms"],  # type: ignore[arg-type]
            ctx["clusters"],  # type: ignore[arg-type]
            ctx["spans"],  # type: ignore[arg-type]
            word_vectors=ctx["words"] if name == "alignment" else None,  # type: ignore[arg-type]
            token_states=ctx["tokens"] if name == "tokens" else None,  # type: ignore[arg-type]
        )
        t, c = choose_global(await grid_of(model))
        out[name] = Variant("learned", t, c, model, note={"dev_choice": [t, c]})
        print(f"{name}: dev choice threshold {t}, cut {c}", flush=True)
    if "per_category" in options or "cost" in options:
        grid = await grid_of(shipped)
        if "per_category" in options:
            plain = choose_per_category(grid, shipped_cut)
            shrunk = choose_per_category_shrunk(grid, shipped_cut)
            out["per_category"] = Variant("learned", plain, shipped_cut, shipped, sweep=False)
            out["per_category_shrunk"] = Variant(
                "learned", shrunk, shipped_cut, shipped, sweep=False
            )
        if "cost" in options:
            for k in args.costs:
                t, c = choose_weighted(grid, k)
                note = {"dev_choice": [t, c], "dev": total(grid[(t, c)]).row()}
                out[f"cost_{k:g}"] = Variant("learned", t, c, shipped, note=note)
            # The cut sweep: the shipped weights at each cut (threshold swept on the holdout).
            for c in CUTS:
                if c != shipped_cut:
                    out[f"cut_{c}"] = Variant("learned", shipped_t, c, shipped)
    if "rules" in options:
        rules = {(t, 0.0): (await dev_ev.replay(order, t, "rules"))[0] for t in TRAIN_THRESHOLDS}
        t = choose_global(rules)[0]
        out["rules"] = Variant("rules", t, 0.5, None, note={"dev_choice": t})
    return out


async def score(
    variant: Variant, orders: list[list[int]], evs: dict[bool, Evaluator]
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """Held-out table at the variant's own setting, and the fixed-threshold sweep."""
    ev = evs[variant.typo_vocab]
    v = variant
    chosen: Tallies = {}
    by_t: dict[float, Tallies] = {t: {} for t in THRESHOLDS} if v.sweep else {}
    for order in orders:
        merge(chosen, (await ev.replay(order, v.thresholds, v.mode, v.cut, v.model, v.margin))[0])
        for t in by_t:
            merge(by_t[t], (await ev.replay(order, t, v.mode, v.cut, v.model, v.margin))[0])
    return table(chosen), {str(t): total(r).row() for t, r in by_t.items()}


async def run(args: argparse.Namespace) -> dict[str, object]:
    started = time.perf_counter()
    dev, held = load_rows(args.data), load_rows(args.holdout)
    base = SemanticCacheConfig()
    raw_model = load_model(base.embedder)
    memo = MemoModel(raw_model)
    categorizer = shipped_categorizer(memo, base)
    vectors = memo.encode([r["prompt"] for r in dev], **EMBED_KWARGS)
    dev_order = list(range(len(dev)))
    random.Random(args.dev_seed).shuffle(dev_order)
    ctx: dict[str, object] = {
        "dev_ev": Evaluator(dev, memo, categorizer),
        "dev_order": dev_order,
        "similarity": vectors @ vectors.T,
        "terms": [prompt_terms(r["prompt"]) for r in dev],
        "clusters": [r["cluster"] for r in dev],
        "spans": span_similarity_from(lambda texts: memo.encode(texts, **EMBED_KWARGS)),
        "words": WordVectors(lambda texts: memo.encode(texts, **EMBED_KWARGS)),
        "tokens": TokenStateCache(memo.token_states, 10**6),
    }
    variants = await dev_variants(args, ctx)
    known = raw_model.whole_words() if any(v.typo_vocab for v in variants.values()) else None
    evs = {
        False: Evaluator(held, memo, categorizer),
        True: Evaluator(held, memo, categorizer, known or frozenset()),
    }
    sets: dict[str, object] = {}
    for start in args.order_sets:
        orders = []
        for k in range(args.orders):
            order = list(range(len(held)))
            random.Random(start + k).shuffle(order)
            orders.append(order)
        held_out, sweep = {}, {}
        for name, v in variants.items():
            held_out[name], sweep[name] = await score(v, orders, evs)
            row = held_out[name]["overall"]
            print(
                f"orders from {start}: {name:22s} {row['hit_rate']:6.1%} / "
                f"{row['false_rate']:5.1%} ({row['hits'] - row['false_hits']:.0f}, "
                f"{row['false_hits']:.0f})  [{time.perf_counter() - started:.0f} s]",
                flush=True,
            )
        sets[str(start)] = {"held_out": held_out, "sweep": sweep}
    return {
        "data": args.data,
        "holdout": args.holdout,
        "dev_seed": args.dev_seed,
        "orders": args.orders,
        "order_sets": args.order_sets,
        "variants": {
            n: {
                "mode": v.mode,
                "thresholds": v.thresholds,
                "cut": v.cut,
                "margin": v.margin,
                "typo_vocab": v.typo_vocab,
                "note": v.note,
            }
            for n, v in variants.items()
        },
        "sets": sets,
        "wall_s": round(time.perf_counter() - started, 1),
    }


def print_report(report: dict[str, object]) -> None:
    print(f"\nchosen on the dev set: {json.dumps(report['variants'], default=str)}")
    for start, res in report["sets"].items():  # type: ignore[attr-defined]
        print(f"\norders {start}..{int(start) + report['orders'] - 1} (summed)")  # type: ignore[operator]
        print(
            f"{'variant':22s} | {'at its setting':>32s} | "
            + " | ".join(f"{t:>13.2f}" for t in THRESHOLDS[1:9])
        )
        for name, rows in res["held_out"].items():
            o = rows["overall"]
            cell = (
                f"{o['hit_rate']:6.1%} / {o['false_rate']:5.1%} "
                f"({o['hits'] - o['false_hits']:.0f}, {o['false_hits']:.0f})"
            )
            sw = res["sweep"][name]
            cells = [
                f"{sw[str(t)]['hit_rate']:5.1%}/{sw[str(t)]['false_rate']:5.1%}"
                if str(t) in sw
                else "-"
                for t in THRESHOLDS[1:9]
            ]
            print(f"{name:22s} | {cell:>32s} | " + " | ".join(f"{c:>13s}" for c in cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="../shared/semantic/dev_prompts.jsonl")
    parser.add_argument("--holdout", default="benchmarks/data/holdout_prompts.jsonl")
    parser.add_argument("--dev-seed", type=int, default=0)
    parser.add_argument("--orders", type=int, default=5)
    parser.add_argument(
        "--order-sets", type=lambda s: [int(x) for x in s.split(",")], default=[0, 5]
    )
    parser.add_argument("--options", default=ALL_OPTIONS)
    parser.add_argument(
        "--costs", type=lambda s: [float(x) for x in s.split(",")], default=[1.0, 3.0, 5.0, 10.0]
    )
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    report = asyncio.run(run(args))
    print_report(report)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1, default=float) + "\n")


if __name__ == "__main__":
    main()
