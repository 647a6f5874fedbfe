"""The cache's categorizer, learned from labelled prompt sets and judged leave-one-set-out.

    python benchmarks/semantic_categorizer_fit.py \
        --sets dev=../shared/semantic/dev_prompts.jsonl,h1=benchmarks/data/holdout_prompts.jsonl,...
        [--score h7=benchmarks/data/holdout7_prompts.jsonl] [--memo FILE] [--out FILE]
        [--write-weights policies/semantic/category_weights.json] [--no-loso]

A prompt's category picks its TTL, quota and threshold, so a time-sensitive question filed as
chat keeps a stale answer for hours. The shipped categorizer before session 7 (YAML rules, then
the nearest of a dozen example prompts, else `chat`) filed 44–54 % of each unseen set right.
Here a multinomial logistic regression on the query's sentence embedding (the vector the lookup
computes anyway) is fitted on labelled sets (`policies.semantic.categorizer.CategoryModel`).

For each set left out in turn, every variant is fitted on the other sets only (its L2 strength
chosen by an inner leave-one-set-out over those sets, by log loss) and scored on the left-out
set: accuracy, and per category recall (how many of its prompts get it) and precision (how
many filed under it belong there). Variants: `examples` (rules, then the nearest example: the
categorizer before session 7), `model` (the
learned model alone), `rules+model` (rules first, the model when none matches: what the cache
now does). `--score`
sets are scored by the variants fitted on all `--sets` (nothing is chosen on them);
`--write-weights` writes that fit of the model.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import msgspec
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.semantic_quality import EMBED_KWARGS, MemoModel, load_rows  # noqa: E402
from config.semantic import SemanticCacheConfig  # noqa: E402
from gateway.semantic.embedder import load_model  # noqa: E402
from policies.semantic.categorizer import (  # noqa: E402
    Categorizer,
    CategoryModel,
    build_categorizer,
)

L2_GRID = (0.01, 0.1, 1.0, 10.0)
VARIANTS = ("examples", "model", "rules+model")


def fit_category_model(
    x: np.ndarray, labels: list[str], l2: float, iters: int = 300
) -> CategoryModel:
    """Softmax regression on unit embeddings (scaled by sqrt(dim) so each coordinate is about
    unit-sized) by full-batch gradient descent with Nesterov momentum; the bias is not shrunk.
    Deterministic."""
    classes = sorted(set(labels))
    scale = float(np.sqrt(x.shape[1]))
    z = x.astype(np.float64) * scale
    y = np.zeros((len(z), len(classes)))
    y[np.arange(len(z)), [classes.index(c) for c in labels]] = 1.0
    w = np.zeros((len(classes), z.shape[1]))
    b = np.zeros(len(classes))
    vw, vb = np.zeros_like(w), np.zeros_like(b)
    # Step 1/L for the loss's curvature bound (softmax: ½ · largest eigenvalue of zᵀz / n).
    lipschitz = 0.5 * float(np.linalg.norm(z, 2) ** 2) / len(z) + l2 / len(z)
    step = 1.0 / lipschitz
    for _ in range(iters):
        lw, lb = w + 0.9 * vw, b + 0.9 * vb
        logits = z @ lw.T + lb
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        gw = (p - y).T @ z / len(z) + l2 * lw / len(z)
        gb = (p - y).mean(axis=0)
        vw, vb = 0.9 * vw - step * gw, 0.9 * vb - step * gb
        w, b = w + vw, b + vb
    return CategoryModel(classes, (w * scale).astype(np.float32), b.astype(np.float32))


def log_loss(model: CategoryModel, x: np.ndarray, labels: list[str]) -> float:
    p = model.probabilities(x)
    idx = [model.classes.index(c) for c in labels]
    return float(-np.mean(np.log(np.maximum(p[np.arange(len(x)), idx], 1e-12))))


class Sets:
    def __init__(self, sets: list[tuple[str, str]], memo: MemoModel):
        self.names = [name for name, _ in sets]
        self.rows = {name: load_rows(path) for name, path in sets}
        self.x = {
            name: memo.encode([r["prompt"] for r in rows], **EMBED_KWARGS)
            for name, rows in self.rows.items()
        }

    def pooled(self, names: list[str]) -> tuple[np.ndarray, list[str]]:
        x = np.vstack([self.x[n] for n in names])
        return x, [r["category"] for n in names for r in self.rows[n]]


def choose_l2(sets: Sets, train: list[str]) -> float:
    """The L2 strength with the lowest log loss, each training set left out in turn."""
    losses = {}
    for l2 in L2_GRID:
        total = 0.0
        for held in train:
            x, y = sets.pooled([n for n in train if n != held])
            model = fit_category_model(x, y, l2)
            total += log_loss(model, sets.x[held], [r["category"] for r in sets.rows[held]])
        losses[l2] = total / len(train)
    return min(losses, key=lambda l2: (losses[l2], l2))


def score(
    shipped: Categorizer,
    model: CategoryModel,
    rows: list[dict[str, str]],
    x: np.ndarray,
) -> dict[str, dict[str, object]]:
    with_model = Categorizer(shipped.cfg, {}, model)
    out = {}
    for variant in VARIANTS:
        pairs: Counter[tuple[str, str]] = Counter()
        for row, vector in zip(rows, x, strict=True):
            if variant == "examples":
                got = shipped.categorize(row["prompt"], vector)
            elif variant == "model":
                got = model.predict(vector)
            else:
                got = with_model.categorize(row["prompt"], vector)
            pairs[(row["category"], got)] += 1
        out[variant] = summary(pairs)
    return out


def summary(pairs: Counter[tuple[str, str]]) -> dict[str, object]:
    n = sum(pairs.values())
    labels = sorted({a for a, _ in pairs} | {b for _, b in pairs})
    recall, precision = {}, {}
    for c in labels:
        own = sum(v for (a, _), v in pairs.items() if a == c)
        filed = sum(v for (_, b), v in pairs.items() if b == c)
        recall[c] = round(pairs[(c, c)] / own, 3) if own else None
        precision[c] = round(pairs[(c, c)] / filed, 3) if filed else None
    return {
        "accuracy": round(sum(v for (a, b), v in pairs.items() if a == b) / n, 4),
        "recall": recall,
        "precision": precision,
        "confusion": {f"{a}->{b}": v for (a, b), v in sorted(pairs.items())},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sets", required=True, help="name=path,... (at least three)")
    parser.add_argument("--score", default="", help="name=path,...: scored once, never fitted")
    parser.add_argument("--memo", default="/tmp/kvgate_pooled_memo.pkl")
    parser.add_argument("--no-loso", action="store_true", help="only the final fit and --score")
    parser.add_argument("--write-weights", default="")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    base = SemanticCacheConfig()
    memo = MemoModel(load_model(base.embedder)).load(args.memo)
    named = [tuple(s.split("=", 1)) for s in args.sets.split(",")]
    extra = [tuple(s.split("=", 1)) for s in args.score.split(",") if s]
    sets = Sets(named + extra, memo)  # type: ignore[arg-type]
    memo.save(args.memo)
    # The categorizer before session 7: rules, then the nearest example prompt.
    shipped = build_categorizer(
        msgspec.structs.replace(base.categorizer, method="examples"),
        lambda texts: memo.encode(texts, **EMBED_KWARGS),
        memo.get_embedding_dimension(),
    )
    train_names = [n for n, _ in named]
    report: dict[str, object] = {"loso": {}, "scored": {}}
    for held in [] if args.no_loso else train_names:
        train = [n for n in train_names if n != held]
        l2 = choose_l2(sets, train)
        model = fit_category_model(*sets.pooled(train), l2)
        row = score(shipped, model, sets.rows[held], sets.x[held])
        row["l2"] = l2  # type: ignore[assignment]
        report["loso"][held] = row  # type: ignore[index]
        print_row(held, row)
    l2 = choose_l2(sets, train_names)
    final = fit_category_model(*sets.pooled(train_names), l2)
    report["final_l2"] = l2
    for name, _ in extra:
        row = score(shipped, final, sets.rows[name], sets.x[name])
        report["scored"][name] = row  # type: ignore[index]
        print_row(f"{name} (scored)", row)
    if args.write_weights:
        Path(args.write_weights).write_text(json.dumps(final.to_dict(), indent=1) + "\n")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


def print_row(name: str, row: dict[str, dict[str, object]]) -> None:
    cells = []
    for variant in VARIANTS:
        s = row[variant]
        ts = (s["recall"].get("time_sensitive"), s["precision"].get("time_sensitive"))  # type: ignore[attr-defined]
        cells.append(f"{variant} {s['accuracy']:.1%} (ts recall/precision {ts[0]}/{ts[1]})")
    print(f"{name}: " + " | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
