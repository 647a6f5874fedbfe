"""Guard quality on an independent prompt set (the `holdout` mode of semantic_eval.py).

Nothing is chosen on the holdout set. Every guard, probability cut and threshold comes from the
dev set (`--data`): the shipped guard is scored exactly as shipped (its weights file, the cut
and threshold of `SemanticCacheConfig`'s defaults); plain cosine gets the one threshold the
choice rule of semantic_quality.py picks on the whole dev set; with `--pair-head` the pair-head
model is fitted on the whole dev set (its shrinkage by the inner cross-validation by group) and
its cut and threshold are chosen by replaying the dev set, as `quality --write-weights` does.
The holdout set is then replayed (lookup, insert on a miss) in `--orders` seeded orders and
the tallies summed; a fixed-threshold sweep is reported alongside.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import numpy as np

from benchmarks.semantic_contrast import contrast_checks
from benchmarks.semantic_cross_fit import CrossSpec, cross_spec, fit_cross_pair
from benchmarks.semantic_guard_fit import fit_pair_head
from benchmarks.semantic_quality import (
    CUTS,
    EMBED_KWARGS,
    THRESHOLDS,
    TRAIN_THRESHOLDS,
    Evaluator,
    MemoModel,
    Tallies,
    choose_global,
    cluster_groups,
    load_rows,
    merge,
    shipped_categorizer,
    table,
    total,
)
from config.semantic import SemanticCacheConfig
from gateway.semantic.cache import shipped_guard_weights
from gateway.semantic.embedder import load_model
from gateway.semantic.pair_model import pair_probability_for
from policies.semantic.guard import NEAR_DUPLICATE_RATIO, GuardModel, span_similarity_from
from policies.semantic.pair_features import edit_of, prompt_terms

# A guard variant: (guard mode, global threshold, probability cut, model).
Variant = tuple[str, float, float, GuardModel | None]


async def holdout(args: argparse.Namespace) -> dict[str, object]:
    dev = load_rows(args.data)
    held = load_rows(args.holdout)
    base = SemanticCacheConfig()
    raw_model = load_model(base.embedder)
    memo = MemoModel(raw_model)
    if getattr(args, "pair_weights", ""):
        # A `--weights` guard that reads the fine-tuned pair model (pair_model.py) gets this file.
        scorer = pair_probability_for(raw_model, args.pair_weights)
        memo.pair_probability = scorer  # type: ignore[attr-defined]
    categorizer = shipped_categorizer(memo, base)
    # The shipped guard as shipped: with `guard.typo_vocabulary` when the run says so (default:
    # the config's default).
    known = raw_model.whole_words() if getattr(args, "typo_vocab", False) else frozenset()
    checks = contrast_checks(args)
    dev_ev = Evaluator(dev, memo, categorizer, known, checks)
    held_ev = Evaluator(held, memo, categorizer, known, checks)
    dev_order = list(range(len(dev)))
    random.Random(args.seed).shuffle(dev_order)

    plain_grid = {(t, 0.0): (await dev_ev.replay(dev_order, t, "off"))[0] for t in TRAIN_THRESHOLDS}
    shipped_thresholds = {p.threshold for p in base.categories.values()}
    if len(shipped_thresholds) != 1:
        raise ValueError("the shipped config is expected to use one threshold for all categories")
    variants: dict[str, Variant] = {
        "plain": ("off", choose_global(plain_grid)[0], 0.0, None),
        "shipped": (
            "learned",
            shipped_thresholds.pop(),
            base.guard.min_probability,
            GuardModel.from_json(shipped_guard_weights()),
        ),
    }
    # `--weights FILE [--threshold T] [--cut C]`: another weights file scored next to the
    # shipped one (its setting fixed beforehand; the config's by default).
    weights = getattr(args, "weights", "")
    if weights:
        variants["weights"] = (
            "learned",
            args.threshold if args.threshold is not None else variants["shipped"][1],
            args.cut if args.cut is not None else base.guard.min_probability,
            _read_weights(weights),
        )
    head_info: dict[str, object] = {}
    if args.pair_head:
        variants["pair_head"], head_info = await _fit_head_on_dev(dev, memo, dev_ev, dev_order)
    cross = cross_spec(args)
    cross_info: dict[str, object] = {}
    if cross is not None:
        variants["cross"], cross_info = await _fit_head_on_dev(dev, memo, dev_ev, dev_order, cross)

    orders = []
    for k in range(args.orders):
        order = list(range(len(held)))
        random.Random(args.seed + k).shuffle(order)
        orders.append(order)
    chosen: dict[str, Tallies] = {}
    false_hits: dict[str, list[dict[str, object]]] = {}
    sweep: dict[str, dict[str, object]] = {}
    for name, (mode, threshold, cut, model) in variants.items():
        chosen[name], false_hits[name] = {}, []
        by_t: dict[float, Tallies] = {t: {} for t in THRESHOLDS}
        for order in orders:
            log: list[dict[str, object]] = []
            merge(
                chosen[name],
                (await held_ev.replay(order, threshold, mode, cut, model, None, log))[0],
            )
            false_hits[name] += log
            for t in THRESHOLDS:
                merge(by_t[t], (await held_ev.replay(order, t, mode, cut, model))[0])
        sweep[name] = {str(t): total(r).row() for t, r in by_t.items()}
    rules: dict[float, Tallies] = {t: {} for t in THRESHOLDS}
    for order in orders:
        for t in THRESHOLDS:
            merge(rules[t], (await held_ev.replay(order, t, "rules"))[0])
    sweep["rules"] = {str(t): total(r).row() for t, r in rules.items()}
    return {
        "data": args.data,
        "holdout": args.holdout,
        "weights": weights,
        "seed": args.seed,
        "orders": args.orders,
        "typo_vocab": bool(known),
        "contrast_checks": list(checks),
        "variants": {
            n: {"mode": v[0], "threshold": v[1], "cut": v[2]} for n, v in variants.items()
        },
        "pair_head": head_info,
        "cross": cross_info,
        "held_out": {name: table(t) for name, t in chosen.items()},
        "sweep": sweep,
        "false_hits": {name: _describe(held, log) for name, log in false_hits.items()},
        "false_hits_by_kind": {
            name: _by_kind(_describe(held, log)) for name, log in false_hits.items()
        },
    }


def _read_weights(path: str) -> GuardModel:
    return GuardModel.from_json(Path(path).read_text())


async def _fit_head_on_dev(
    dev: list[dict[str, str]],
    memo: MemoModel,
    dev_ev: Evaluator,
    order: list[int],
    cross: CrossSpec | None = None,
) -> tuple[Variant, dict[str, object]]:
    """The pair-head model (or, with `cross`, the cross-feature model) fitted on the whole dev
    set, with its threshold and cut chosen by replaying the dev set."""
    vectors = memo.encode([r["prompt"] for r in dev], **EMBED_KWARGS)
    terms = [prompt_terms(r["prompt"]) for r in dev]
    clusters = [r["cluster"] for r in dev]
    groups = cluster_groups(dev)
    spans = span_similarity_from(lambda texts: memo.encode(texts, **EMBED_KWARGS))
    group_of = [groups[c] for c in clusters]
    if cross is None:
        model, l2, losses = fit_pair_head(
            order, vectors @ vectors.T, terms, clusters, group_of, spans, vectors
        )
    else:
        model, l2, losses = fit_cross_pair(
            order,
            vectors @ vectors.T,
            terms,
            clusters,
            group_of,
            spans,
            vectors,
            memo.joint_states,
            cross,
        )
    grid = {
        (t, c): (await dev_ev.replay(order, t, "learned", c, model))[0]
        for t in TRAIN_THRESHOLDS
        for c in CUTS
    }
    threshold, cut = choose_global(grid)
    info = {"l2": l2, "inner_log_loss": {str(k): v for k, v in losses.items()}}
    if cross is not None:
        info["spec"] = {"vectors": cross.vectors, "orders": cross.orders}
    return ("learned", threshold, cut, model), info


def _describe(rows: list[dict[str, str]], log: list[dict[str, object]]) -> list[dict[str, object]]:
    """Each distinct false hit (query, served entry) with its texts, clusters and edit shape."""
    by_id = {r["id"]: r for r in rows}
    seen: dict[tuple[object, object], dict[str, object]] = {}
    for hit in log:
        key = (hit["query"], hit["served"])
        if key in seen:
            seen[key]["count"] += 1  # type: ignore[operator]
            continue
        q, s = by_id[str(hit["query"])], by_id[str(hit["served"])]
        ratio = edit_of(prompt_terms(q["prompt"]), prompt_terms(s["prompt"])).ratio
        seen[key] = {
            "query": q["prompt"],
            "served": s["prompt"],
            "clusters": [q["cluster"], s["cluster"]],
            "siblings": q.get("sibling") == s["cluster"],
            # What makes the sibling another question (the set's `sibling_kind` label).
            "kind": q.get("sibling_kind", "?") if q.get("sibling") == s["cluster"] else "other",
            "near_duplicate": ratio >= NEAR_DUPLICATE_RATIO,
            "similarity": round(float(np.float64(hit["similarity"])), 4),  # type: ignore[arg-type]
            "edit_ratio": round(ratio, 3),
            "count": 1,
        }
    return sorted(seen.values(), key=lambda h: -h["count"])  # type: ignore[operator]


def _by_kind(hits: list[dict[str, object]]) -> dict[str, dict[str, int]]:
    """False hits over all orders by sibling kind, split by edit shape."""
    out: dict[str, dict[str, int]] = {}
    for h in hits:
        row = out.setdefault(str(h["kind"]), {"near_duplicate": 0, "broad": 0, "pairs": 0})
        row["near_duplicate" if h["near_duplicate"] else "broad"] += int(h["count"])  # type: ignore[call-overload]
        row["pairs"] += 1
    return dict(sorted(out.items(), key=lambda kv: -(kv[1]["near_duplicate"] + kv[1]["broad"])))


def print_holdout(report: dict[str, object]) -> None:
    variants = report["variants"]
    print(f"holdout {report['holdout']}, {report['orders']} orders from seed {report['seed']}")
    print(f"chosen on the dev set: {variants}  pair head: {report['pair_head']}")
    print(f"cross: {report['cross']}")
    sweep = report["sweep"]
    names = list(sweep)  # type: ignore[arg-type]
    print("\nthreshold sweep (hit rate / false rate):")
    print(f"{'thr':>5} | " + " | ".join(f"{n:>15}" for n in names))
    for t in THRESHOLDS:
        cells = [sweep[n][str(t)] for n in names]  # type: ignore[index]
        print(
            f"{t:5.2f} | "
            + " | ".join(f"{c['hit_rate']:6.1%} / {c['false_rate']:5.1%}" for c in cells)
        )
    for name, rows in report["held_out"].items():  # type: ignore[attr-defined]
        print(f"\n{name} at its dev-chosen threshold / cut")
        for category, row in rows.items():
            print(
                f"  {category:15s} hit {row['hit_rate']:6.1%}  false {row['false_rate']:5.1%}"
                f"  ({row['hits']} hits, {row['false_hits']} false, {row['possible']} possible)"
            )
    for name, hits in report["false_hits"].items():  # type: ignore[attr-defined]
        print(f"\nfalse hits of {name} (distinct pairs, times over all orders):")
        for h in hits:
            print(
                f"  x{h['count']} sim {h['similarity']:.3f} ratio {h['edit_ratio']:.2f} "
                f"{h['kind']:15s}  {h['query']!r} <- {h['served']!r}"
            )
        print(f"  by kind (false hits over all orders): {report['false_hits_by_kind'][name]}")  # type: ignore[index]
