"""Semantic cache evaluation: hit quality (threshold sweep, guard on/off) and lookup latency.

    python benchmarks/semantic_eval.py quality [--data ../shared/semantic/dev_prompts.jsonl]
        [--folds 5] [--seed 0] [--out FILE] [--write-weights policies/semantic/guard_weights.json]
    python benchmarks/semantic_eval.py latency [--entries 100000] [--out FILE]

Quality: prompts are replayed in a seeded random order through the real SemanticCache (lookup,
then insert on a miss); the model's `encode` is memoised so each prompt is embedded once. The
guard and the thresholds are chosen on some cluster groups and scored on the others (k-fold by
group; a cluster and its hard-negative sibling always share a fold).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.semantic_guard_fit import fit_guard  # noqa: E402
from config.semantic import (  # noqa: E402
    CATEGORIES,
    CategoryPolicy,
    EmbedderConfig,
    GuardConfig,
    SemanticCacheConfig,
)
from gateway.semantic.cache import CachedReply, CacheQuery, SemanticCache  # noqa: E402
from gateway.semantic.embedder import Embedder, load_model  # noqa: E402
from policies.semantic.categorizer import Categorizer  # noqa: E402
from policies.semantic.guard import Guard, GuardModel  # noqa: E402
from policies.semantic.pair_features import prompt_terms  # noqa: E402

THRESHOLDS = [round(0.50 + 0.05 * i, 2) for i in range(10)]
MAX_FALSE_RATE = 0.02
FALSE_HIT_COST = 5.0


class MemoModel:
    """Wraps the real model; each distinct text is encoded once for the whole run."""

    def __init__(self, model: object, vectors: dict[str, np.ndarray]):
        self.model = model
        self.vectors = vectors

    def get_embedding_dimension(self) -> int:
        return self.model.get_embedding_dimension()  # type: ignore[attr-defined]

    def encode(self, texts: list[str], **kwargs: object) -> np.ndarray:
        missing = [t for t in texts if t not in self.vectors]
        if missing:
            out = self.model.encode(missing, **kwargs)  # type: ignore[attr-defined]
            self.vectors.update(zip(missing, out, strict=True))
        return np.stack([self.vectors[t] for t in texts])


@dataclass
class Tally:
    possible: int = 0
    hits: int = 0
    false_hits: int = 0

    def add(self, other: Tally) -> None:
        self.possible += other.possible
        self.hits += other.hits
        self.false_hits += other.false_hits

    @property
    def hit_rate(self) -> float:
        return (self.hits - self.false_hits) / self.possible if self.possible else 0.0

    @property
    def false_rate(self) -> float:
        return self.false_hits / self.hits if self.hits else 0.0

    def row(self) -> dict[str, float]:
        return {
            "possible": self.possible,
            "hits": self.hits,
            "false_hits": self.false_hits,
            "hit_rate": round(self.hit_rate, 4),
            "false_rate": round(self.false_rate, 4),
        }


def load_rows(path: str) -> list[dict[str, str]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def cluster_groups(rows: list[dict[str, str]]) -> dict[str, str]:
    """Cluster -> group id: clusters joined by sibling links (union-find)."""
    parent: dict[str, str] = {}

    def find(c: str) -> str:
        parent.setdefault(c, c)
        while parent[c] != c:
            parent[c] = parent[parent[c]]
            c = parent[c]
        return c

    for r in rows:
        find(r["cluster"])
        if r.get("sibling"):
            parent[find(r["cluster"])] = find(r["sibling"])
    return {c: find(c) for c in parent}


def make_config(
    thresholds: dict[str, float], mode: str, min_probability: float = 0.5
) -> SemanticCacheConfig:
    categories = {
        c: CategoryPolicy(threshold=thresholds[c], ttl_s=1e9, max_entries=10_000)
        for c in CATEGORIES
    }
    # A sequential replay has nothing to batch: no micro-batch wait.
    embedder = EmbedderConfig(max_wait_ms=0.0)
    return SemanticCacheConfig(
        categories=categories,
        guard=GuardConfig(mode=mode, min_probability=min_probability),  # type: ignore[arg-type]
        embedder=embedder,  # type: ignore[arg-type]
    )


async def replay(
    rows: list[dict[str, str]],
    order: list[int],
    cfg: SemanticCacheConfig,
    embedder_model: MemoModel,
    categorizer: Categorizer,
    guard_model: GuardModel | None,
) -> tuple[dict[str, Tally], dict[str, int]]:
    """Lookup-then-insert replay; tallies by true category, and categorizer agreement."""
    guard = Guard(cfg.guard.mode, guard_model, cfg.guard.min_probability)
    cache = SemanticCache(cfg, Embedder(cfg.embedder, embedder_model), categorizer, guard)
    await cache.start()
    tallies: dict[str, Tally] = defaultdict(Tally)
    agree = {"same": 0, "total": 0}
    seen_clusters: set[str] = set()
    cluster_of_text: dict[str, str] = {}
    try:
        for i in order:
            row = rows[i]
            tally = tallies[row["category"]]
            possible = row["cluster"] in seen_clusters
            tally.possible += possible
            query = CacheQuery(tenant="eval", model="m", text=row["prompt"], temperature=0.0)
            result = await cache.lookup(query)
            agree["total"] += 1
            agree["same"] += result.category == row["category"]
            if result.status == "hit":
                assert result.reply is not None
                tally.hits += 1
                tally.false_hits += cluster_of_text[result.reply.text] != row["cluster"]
            else:
                # The stored reply names its cluster, so a hit tells us whose answer it was.
                reply_text = f"{row['cluster']}::{row['id']}"
                cluster_of_text[reply_text] = row["cluster"]
                await cache.insert(result, CachedReply(text=reply_text))
                seen_clusters.add(row["cluster"])
    finally:
        await cache.close()
    return tallies, agree


def total(tallies: dict[str, Tally]) -> Tally:
    out = Tally()
    for t in tallies.values():
        out.add(t)
    return out


def choose(results: dict[float, dict[str, Tally]], category: str | None) -> float:
    """Threshold with the most correct hits among those within the false-hit budget; when
    none is within it, the best net value with a false hit costing FALSE_HIT_COST misses."""
    scored = []
    for threshold, tallies in results.items():
        t = total(tallies) if category is None else tallies.get(category, Tally())
        within = t.false_rate <= MAX_FALSE_RATE
        correct = t.hits - t.false_hits
        value = t.hit_rate if within else correct - FALSE_HIT_COST * t.false_hits
        scored.append((within, value, threshold, threshold))
    return max(scored)[3]


def merge(into: dict[str, Tally], tallies: dict[str, Tally]) -> None:
    for category, t in tallies.items():
        into.setdefault(category, Tally()).add(t)


def table(tallies: dict[str, Tally]) -> dict[str, dict[str, float]]:
    out = {c: tallies[c].row() for c in sorted(tallies)}
    out["overall"] = total(tallies).row()
    return out


async def quality(args: argparse.Namespace) -> dict[str, object]:
    rows = load_rows(args.data)
    base = SemanticCacheConfig()
    memo = MemoModel(load_model(base.embedder), {})
    embed_kwargs = {"normalize_embeddings": True, "batch_size": 64, "show_progress_bar": False}
    vectors = memo.encode([r["prompt"] for r in rows], **embed_kwargs)
    similarity = vectors @ vectors.T
    terms = [prompt_terms(r["prompt"]) for r in rows]
    clusters = [r["cluster"] for r in rows]
    examples = {
        c: memo.encode(list(texts), **embed_kwargs)
        for c, texts in base.categorizer.examples.items()
    }
    categorizer = Categorizer(base.categorizer, examples)

    groups = cluster_groups(rows)
    group_ids = sorted(set(groups.values()))
    random.Random(args.seed).shuffle(group_ids)
    fold_of_group = {g: k % args.folds for k, g in enumerate(group_ids)}
    fold_of = [fold_of_group[groups[r["cluster"]]] for r in rows]
    order = list(range(len(rows)))
    random.Random(args.seed).shuffle(order)

    sweep: dict[str, dict[float, dict[str, Tally]]] = {
        m: {t: {} for t in THRESHOLDS} for m in ("off", "rules", "learned")
    }
    per_category: dict[str, Tally] = {}
    best_global: dict[str, Tally] = {}
    plain_global: dict[str, Tally] = {}
    chosen_log = []
    agree_total = {"same": 0, "total": 0}
    for fold in range(args.folds):
        train = [i for i in order if fold_of[i] != fold]
        test = [i for i in order if fold_of[i] == fold]
        model = fit_guard(train, similarity, terms, clusters)
        train_res: dict[float, dict[str, Tally]] = {}
        train_plain: dict[float, dict[str, Tally]] = {}
        for t in THRESHOLDS:
            thresholds = dict.fromkeys(CATEGORIES, t)
            train_res[t] = (
                await replay(
                    rows,
                    train,
                    make_config(thresholds, "learned", args.min_probability),
                    memo,
                    categorizer,
                    model,
                )
            )[0]
            train_plain[t] = (
                await replay(rows, train, make_config(thresholds, "off"), memo, categorizer, None)
            )[0]
        chosen = {c: choose(train_res, c) for c in CATEGORIES}
        chosen_global = choose(train_res, None)
        chosen_plain = choose(train_plain, None)
        chosen_log.append(
            {
                "fold": fold,
                "per_category": chosen,
                "global": chosen_global,
                "plain_global": chosen_plain,
            }
        )
        for mode in sweep:
            for t in THRESHOLDS:
                thresholds = dict.fromkeys(CATEGORIES, t)
                res, agree = await replay(
                    rows,
                    test,
                    make_config(thresholds, mode, args.min_probability),
                    memo,
                    categorizer,
                    model if mode == "learned" else None,
                )
                merge(sweep[mode][t], res)
                if mode == "learned" and t == THRESHOLDS[0]:
                    agree_total["same"] += agree["same"]
                    agree_total["total"] += agree["total"]
        merge(
            best_global,
            sweep_fold := (
                await replay(
                    rows,
                    test,
                    make_config(
                        dict.fromkeys(CATEGORIES, chosen_global), "learned", args.min_probability
                    ),
                    memo,
                    categorizer,
                    model,
                )
            )[0],
        )
        del sweep_fold
        merge(
            plain_global,
            (
                await replay(
                    rows,
                    test,
                    make_config(dict.fromkeys(CATEGORIES, chosen_plain), "off"),
                    memo,
                    categorizer,
                    None,
                )
            )[0],
        )
        merge(
            per_category,
            (
                await replay(
                    rows,
                    test,
                    make_config(chosen, "learned", args.min_probability),
                    memo,
                    categorizer,
                    model,
                )
            )[0],
        )

    # Shipped guard and thresholds: fitted and chosen on all the data.
    everything = list(order)
    final_model = fit_guard(everything, similarity, terms, clusters)
    all_res = {
        t: (
            await replay(
                rows,
                everything,
                make_config(dict.fromkeys(CATEGORIES, t), "learned", args.min_probability),
                memo,
                categorizer,
                final_model,
            )
        )[0]
        for t in THRESHOLDS
    }
    final_thresholds = {c: choose(all_res, c) for c in CATEGORIES}
    return {
        "data": args.data,
        "folds": args.folds,
        "seed": args.seed,
        "categorizer_agreement": agree_total["same"] / max(1, agree_total["total"]),
        "sweep": {m: {str(t): total(r).row() for t, r in sweep[m].items()} for m in sweep},
        "sweep_by_category": {m: {str(t): table(r) for t, r in sweep[m].items()} for m in sweep},
        "plain_global_threshold_held_out": table(plain_global),
        "guard_global_threshold_held_out": table(best_global),
        "guard_per_category_held_out": table(per_category),
        "chosen_per_fold": chosen_log,
        "shipped_thresholds": final_thresholds,
        "shipped_guard": json.loads(final_model.to_json()),
    }


def print_quality(report: dict[str, object]) -> None:
    sweep = report["sweep"]
    print("threshold sweep (held-out folds, one global threshold): hit rate / false rate")
    print(f"{'thr':>5} | {'plain':>15} | {'rules guard':>15} | {'learned guard':>15}")
    for t in THRESHOLDS:
        cells = [sweep[m][str(t)] for m in ("off", "rules", "learned")]  # type: ignore[index]
        print(
            f"{t:5.2f} | "
            + " | ".join(f"{c['hit_rate']:6.1%} / {c['false_rate']:5.1%}" for c in cells)
        )
    for name in (
        "plain_global_threshold_held_out",
        "guard_global_threshold_held_out",
        "guard_per_category_held_out",
    ):
        print(f"\n{name}")
        for category, row in report[name].items():  # type: ignore[attr-defined]
            print(
                f"  {category:15s} hit {row['hit_rate']:6.1%}  false {row['false_rate']:5.1%}"
                f"  ({row['hits']} hits, {row['false_hits']} false, {row['possible']} possible)"
            )
    print(f"\ncategorizer agreement with labels: {report['categorizer_agreement']:.1%}")
    print(f"thresholds chosen per fold: {report['chosen_per_fold']}")
    print(f"shipped thresholds (chosen on all data): {report['shipped_thresholds']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=["quality", "latency"])
    parser.add_argument("--data", default="../shared/semantic/dev_prompts.jsonl")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--min-probability", type=float, default=0.5)
    parser.add_argument("--single", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--write-weights", default="")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    if args.mode == "quality":
        report = asyncio.run(quality(args))
        print_quality(report)
        if args.write_weights:
            text = json.dumps(report["shipped_guard"], indent=1)
            Path(args.write_weights).write_text(text + "\n")
    else:
        from benchmarks.semantic_latency import latency, print_latency

        report = asyncio.run(latency(args))
        print_latency(report)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1, default=float) + "\n")


if __name__ == "__main__":
    main()
