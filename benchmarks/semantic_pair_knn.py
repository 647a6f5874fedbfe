"""Does a pair's difference direction, matched against other writers' pairs, mark reversals?

    python benchmarks/semantic_pair_knn.py --sets dev=...,h1=...,... [--k 10] [--out FILE]

An offline probe (pairs, not cache replays) for a general idea against broad rewrites that
reverse the question in other words: a reversal (negation, antonym, direction) may move the
sentence embedding along a direction that recurs across topics, the way "not" or "from ... to"
does. For a pair (a, b) let d be the unit difference u - v of their embeddings; its neighbours
are the training pairs whose d' is most parallel (|d . d'|, the order of a pair is arbitrary).
The feature is the share of different-cluster pairs among the `k` nearest training pairs.

Leave-one-set-out: for each set, the default recipe is fitted on the other sets
(semantic_pooled_fit.py) and their broad-rewrite pairs at the shipped threshold form the bank;
the left-out set's broad-rewrite pairs at that threshold that the default guard would serve
(not vetoed, probability >= the cut) are the ones that matter: those are its false hits and
its correct hits. Printed per set: how many, how many false, and the ROC AUC of the kNN share
for telling the false from the correct among them (0.5: no information), next to the AUC of
the default model's own probability among the same pairs, and of the two ranks averaged.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.semantic_contrast import contrast_checks  # noqa: E402
from benchmarks.semantic_guard_fit import broad_pairs  # noqa: E402
from benchmarks.semantic_pooled import Pooled  # noqa: E402
from benchmarks.semantic_pooled_fit import REACH_COSINE, Candidate, fit_candidate  # noqa: E402
from benchmarks.semantic_quality import MemoModel  # noqa: E402
from config.semantic import SemanticCacheConfig  # noqa: E402
from gateway.semantic.embedder import load_model  # noqa: E402
from policies.semantic.guard import Guard  # noqa: E402
from policies.semantic.pair_features import edit_of  # noqa: E402

DEFAULT_RECIPE = "pooled+near+idf+reach+synonym+filler"


def directions(pairs: list[tuple[int, int]], vectors: np.ndarray) -> np.ndarray:
    d = np.array([vectors[i] - vectors[j] for i, j in pairs], dtype=np.float64)
    return d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-9)


def knn_share(query: np.ndarray, bank: np.ndarray, bank_negative: np.ndarray, k: int) -> np.ndarray:
    """Share of different-cluster pairs among each query direction's `k` most parallel."""
    sim = np.abs(query @ bank.T)
    top = np.argpartition(-sim, min(k, sim.shape[1] - 1), axis=1)[:, :k]
    return bank_negative[top].mean(axis=1)


def auc(score: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC of `score` for `positive` (ties count half); nan without both classes."""
    pos, neg = score[positive], score[~positive]
    if not len(pos) or not len(neg):
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def probe(pooled: Pooled, name: str, k: int, checks: tuple[str, ...]) -> dict[str, float]:
    data = pooled.data
    train = [i for n in pooled.names if n != name for i in pooled.indices(n)]
    model, _ = fit_candidate(train, data, Candidate.parse(DEFAULT_RECIPE))
    bank_pairs = [
        p
        for part in data.by_set(train)
        for p in broad_pairs(part, data.similarity, data.terms, data.known_words, REACH_COSINE)
    ]
    bank = directions(bank_pairs, data.vectors)
    bank_negative = np.array([data.clusters[i] != data.clusters[j] for i, j in bank_pairs])
    guard = Guard(
        "learned",
        model,
        pooled.setting[1],
        data.veto_guard.min_span_similarity,
        data.known_words,
        checks,
    )
    served, prob = [], []
    own = pooled.indices(name)
    for i, j in broad_pairs(own, data.similarity, data.terms, data.known_words, REACH_COSINE):
        a, b = data.terms[i], data.terms[j]
        if guard.veto(a, b, edit_of(a, b, data.known_words)):
            continue
        p = guard.probability(float(data.similarity[i, j]), a, b, data.spans)
        if p >= pooled.setting[1]:
            served.append((i, j))
            prob.append(p)
    false = np.array([data.clusters[i] != data.clusters[j] for i, j in served])
    share = knn_share(directions(served, data.vectors), bank, bank_negative, k)
    return {
        "served_pairs": len(served),
        "false_pairs": int(false.sum()),
        "bank_pairs": len(bank_pairs),
        "knn_auc": auc(share, false),
        "model_auc": auc(-np.array(prob), false),
        # Both, unfitted: the mean of the two ranks (no weight chosen on any set).
        "both_auc": auc(_ranks(share) + _ranks(-np.array(prob)), false),
    }


def _ranks(x: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(x, kind="stable"), kind="stable").astype(np.float64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sets", required=True)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--checks", default=None)
    parser.add_argument("--memo", default="/tmp/kvgate_pooled_memo.pkl")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    memo = MemoModel(load_model(SemanticCacheConfig().embedder)).load(args.memo)
    sets = [tuple(s.split("=", 1)) for s in args.sets.split(",")]
    checks = contrast_checks(args)
    pooled = Pooled(sets, memo, checks)  # type: ignore[arg-type]
    report = {name: probe(pooled, name, args.k, checks) for name in pooled.names}
    print("set | served pairs | false | bank | AUC kNN share | model | both (false vs correct)")
    for name, r in report.items():
        print(
            f"{name} | {r['served_pairs']} | {r['false_pairs']} | {r['bank_pairs']} | "
            f"{r['knn_auc']:.3f} | {r['model_auc']:.3f} | {r['both_auc']:.3f}"
        )
    if args.out:
        Path(args.out).write_text(json.dumps({"k": args.k, "sets": report}, indent=1) + "\n")


if __name__ == "__main__":
    main()
