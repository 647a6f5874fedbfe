"""Dev-set (k-fold by cluster group) figures the `quality` mode does not give: the setting
chosen when a false hit costs k correct hits, and `rules` mode with its threshold chosen per
fold. The shipped choice rule runs alongside as the baseline (it reproduces `quality`'s
"guard, global thr" row for the same seed).

    python benchmarks/semantic_options_dev.py --data ../shared/semantic/dev_prompts.jsonl \
        [--seeds 0,1] [--folds 5] [--costs 1,3,5,10] [--fixed 0.75:0.5,0.7:0.7] [--fixed-only]
        [--[no-]typo-vocab] [--checks none|all|NAME,...] [--out FILE]

Same protocol as semantic_quality.py: per fold the guard's model is fitted on the training
folds and (threshold, cut) chosen by replaying them; the held-out fold is replayed once in the
seed's order and the tallies summed over the folds. `--fixed-only` skips every choice (no grid
of training replays): only the fixed settings are scored, with the model still fitted per fold.
`--typo-vocab` and `--checks` set the guard's options as in semantic_eval.py (defaults: the
shipped config's).
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
from benchmarks.semantic_guard_fit import fit_guard  # noqa: E402
from benchmarks.semantic_options_holdout import choose_weighted  # noqa: E402
from benchmarks.semantic_quality import (  # noqa: E402
    CUTS,
    EMBED_KWARGS,
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
)
from config.semantic import SemanticCacheConfig  # noqa: E402
from gateway.semantic.embedder import load_model  # noqa: E402
from policies.semantic.guard import span_similarity_from  # noqa: E402
from policies.semantic.pair_features import prompt_terms  # noqa: E402


async def dev_folds(args: argparse.Namespace) -> dict[str, object]:
    started = time.perf_counter()
    rows = load_rows(args.data)
    base = SemanticCacheConfig()
    raw_model = load_model(base.embedder)
    memo = MemoModel(raw_model)
    known = raw_model.whole_words() if args.typo_vocab else frozenset()
    checks = contrast_checks(args)
    vectors = memo.encode([r["prompt"] for r in rows], **EMBED_KWARGS)
    similarity = vectors @ vectors.T
    terms = [prompt_terms(r["prompt"]) for r in rows]
    clusters = [r["cluster"] for r in rows]
    spans = span_similarity_from(lambda texts: memo.encode(texts, **EMBED_KWARGS))
    ev = Evaluator(rows, memo, shipped_categorizer(memo, base), known, checks)
    groups = cluster_groups(rows)
    out: dict[str, object] = {}
    for seed in args.seeds:
        # Folds and order exactly as semantic_quality.quality draws them for this seed.
        group_ids = sorted(set(groups.values()))
        random.Random(seed).shuffle(group_ids)
        fold_of_group = {g: k % args.folds for k, g in enumerate(group_ids)}
        fold_of = [fold_of_group[groups[r["cluster"]]] for r in rows]
        order = list(range(len(rows)))
        random.Random(seed).shuffle(order)
        held: dict[str, Tallies] = {}
        chosen: list[dict[str, object]] = []
        for fold in range(args.folds):
            train = [i for i in order if fold_of[i] != fold]
            test = [i for i in order if fold_of[i] == fold]
            model = fit_guard(train, similarity, terms, clusters, spans, known_words=known)
            picks: dict[str, tuple[float, float]] = {}
            if not args.fixed_only:
                grid = {
                    (t, c): (await ev.replay(train, t, "learned", c, model))[0]
                    for t in TRAIN_THRESHOLDS
                    for c in CUTS
                }
                picks = {"shipped_rule": choose_global(grid)}
                picks |= {f"cost_{k:g}": choose_weighted(grid, k) for k in args.costs}
            # Fixed settings (no choice): the dev figure of a sweep point of the holdout table.
            picks |= {f"fixed_{t:g}_{c:g}": (t, c) for t, c in args.fixed}
            for name, (t, c) in picks.items():
                merge(held.setdefault(name, {}), (await ev.replay(test, t, "learned", c, model))[0])
            if not args.fixed_only:
                rules = {
                    (t, 0.0): (await ev.replay(train, t, "rules"))[0] for t in TRAIN_THRESHOLDS
                }
                rules_t = choose_global(rules)[0]
                merge(held.setdefault("rules", {}), (await ev.replay(test, rules_t, "rules"))[0])
                picks["rules"] = (rules_t, 0.0)
            chosen.append({"fold": fold} | {n: list(p) for n, p in picks.items()})
            print(f"seed {seed} fold {fold}: {chosen[-1]}", flush=True)
        out[str(seed)] = {"held_out": {n: table(t) for n, t in held.items()}, "chosen": chosen}
        for name, t in held.items():
            o = table(t)["overall"]
            print(
                f"seed {seed} {name:14s} {o['hit_rate']:6.1%} / {o['false_rate']:5.1%} "
                f"({o['hits'] - o['false_hits']:.0f}, {o['false_hits']:.0f})",
                flush=True,
            )
    return {
        "data": args.data,
        "folds": args.folds,
        "seeds": args.seeds,
        "costs": args.costs,
        "fixed": args.fixed,
        "typo_vocab": bool(known),
        "contrast_checks": list(checks),
        "results": out,
        "wall_s": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="../shared/semantic/dev_prompts.jsonl")
    parser.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument(
        "--costs", type=lambda s: [float(x) for x in s.split(",")], default=[1.0, 3.0, 5.0, 10.0]
    )
    parser.add_argument(
        "--fixed",
        type=lambda s: [tuple(float(v) for v in x.split(":")) for x in s.split(",") if x],
        default=[(0.75, 0.5), (0.75, 0.7), (0.7, 0.7), (0.8, 0.5)],
        help="THRESHOLD:CUT,... settings scored as they are (no choice)",
    )
    parser.add_argument("--fixed-only", action="store_true", help="score the fixed settings only")
    parser.add_argument(
        "--typo-vocab",
        action=argparse.BooleanOptionalAction,
        default=SemanticCacheConfig().guard.typo_vocabulary,
    )
    parser.add_argument("--checks", default=None, help="contrast checks: none|all|NAME,...")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    report = asyncio.run(dev_folds(args))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1, default=float) + "\n")


if __name__ == "__main__":
    main()
