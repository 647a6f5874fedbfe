"""What the fine-tuned cross-encoder tells apart on each left-out set, by sibling kind.

    python benchmarks/semantic_pair_probe.py --sets dev=...,h1=...,...,h6=... \
        --ft-loso /tmp/kvgate_ft_loso.pkl [--cut 0.5] [--out FILE]

Reads semantic_pair_train.py's `--loso` table (each set's pairs scored by the model trained on
the other sets only). Over each set's pairs at cosine >= 0.75 (the shipped threshold): the ROC
AUC of the probability for same-cluster against different-cluster pairs (next to the plain
cosine's AUC over the same pairs), and at `--cut` the
share of different-answer pairs it rejects ("caught") and of same-answer pairs it rejects
("lost"); different-answer pairs that are sibling pairs are also counted per sibling kind (the
holdout sets label the kind; the dev set does not). No fitting, no replay: pairs, not lookups.

`--served`: also, as benchmarks/semantic_pair_knn.py does, only the broad-rewrite pairs at the
shipped threshold that the default recipe fitted on the other sets would serve (its false and
its correct hits): the AUC of the cross-encoder for telling the false from the correct among
them, next to the default model's own probability's.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.semantic_quality import EMBED_KWARGS, MemoModel, load_rows  # noqa: E402
from config.semantic import SemanticCacheConfig  # noqa: E402
from gateway.semantic.embedder import load_model  # noqa: E402
from policies.semantic.pair_features import prompt_terms  # noqa: E402

REACH = 0.75


def auc(scores_pos: list[float], scores_neg: list[float]) -> float:
    """P(a random same-answer pair scores above a random different-answer pair), ties half."""
    if not scores_pos or not scores_neg:
        return float("nan")
    pos, neg = np.asarray(scores_pos), np.asarray(scores_neg)
    above = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(above / (len(pos) * len(neg)))


def probe(rows: list[dict[str, str]], vectors: np.ndarray, table: dict, cut: float) -> dict:
    kind_of = {}
    for r in rows:
        if r.get("sibling"):
            kind = r.get("sibling_kind", "unlabelled")
            kind_of[(r["cluster"], r["sibling"])] = kind_of[(r["sibling"], r["cluster"])] = kind
    sim = vectors @ vectors.T
    same, different = [], []
    cos_same, cos_different = [], []
    kinds: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # caught, pairs
    for i in range(len(rows)):
        for j in range(i + 1, len(rows)):
            if sim[i, j] < REACH:
                continue
            p = table[
                (prompt_terms(rows[i]["prompt"]).wording, prompt_terms(rows[j]["prompt"]).wording)
            ]
            ci, cj = rows[i]["cluster"], rows[j]["cluster"]
            if ci == cj:
                same.append(p)
                cos_same.append(float(sim[i, j]))
                continue
            different.append(p)
            cos_different.append(float(sim[i, j]))
            tally = kinds[kind_of.get((ci, cj), "not siblings")]
            tally[0] += p < cut
            tally[1] += 1
    return {
        "same_pairs": len(same),
        "different_pairs": len(different),
        "auc": round(auc(same, different), 3),
        "cosine_auc": round(auc(cos_same, cos_different), 3),
        "caught": round(float(np.mean(np.asarray(different) < cut)), 3) if different else None,
        "lost": round(float(np.mean(np.asarray(same) < cut)), 3) if same else None,
        "by_kind": {k: {"caught": v[0], "pairs": v[1]} for k, v in sorted(kinds.items())},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sets", required=True)
    parser.add_argument("--ft-loso", required=True)
    parser.add_argument("--cut", type=float, default=0.5)
    parser.add_argument("--memo", default="/tmp/kvgate_pooled_memo.pkl")
    parser.add_argument("--served", action="store_true")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    tables = pickle.loads(Path(args.ft_loso).read_bytes())
    memo = MemoModel(load_model(SemanticCacheConfig().embedder)).load(args.memo)
    report = {}
    print("set | same, different pairs | AUC (cosine's) | caught | lost | caught by sibling kind")
    for name, path in (s.split("=", 1) for s in args.sets.split(",")):
        if name not in tables:
            continue
        rows = load_rows(path)
        vectors = memo.encode([r["prompt"] for r in rows], **EMBED_KWARGS)
        res = probe(rows, vectors, tables[name], args.cut)
        report[name] = res
        kinds = ", ".join(f"{k} {v['caught']}/{v['pairs']}" for k, v in res["by_kind"].items())
        print(
            f"{name} | {res['same_pairs']}, {res['different_pairs']} | {res['auc']} "
            f"({res['cosine_auc']}) | "
            f"{res['caught']} | {res['lost']} | {kinds}"
        )
    if args.served:
        report["served"] = served_probe(args.sets, memo, tables)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


def served_probe(sets_arg: str, memo: MemoModel, tables: dict) -> dict[str, dict[str, float]]:
    from benchmarks.semantic_contrast import contrast_checks
    from benchmarks.semantic_guard_fit import broad_pairs
    from benchmarks.semantic_pair_knn import auc as flag_auc
    from benchmarks.semantic_pooled import Pooled
    from benchmarks.semantic_pooled_fit import Candidate, fit_candidate
    from policies.semantic.guard import Guard
    from policies.semantic.pair_features import edit_of

    checks = contrast_checks(argparse.Namespace(checks=None))
    pooled = Pooled([tuple(s.split("=", 1)) for s in sets_arg.split(",")], memo, checks)  # type: ignore[misc]
    data, out = pooled.data, {}
    print("set | served broad pairs | false | AUC cross-encoder | default model (false vs correct)")
    for name in [n for n in pooled.names if n in tables]:
        train = [i for n in pooled.names if n != name for i in pooled.indices(n)]
        model, _ = fit_candidate(
            train, data, Candidate.parse("pooled+near+idf+reach+synonym+filler")
        )
        guard = Guard(
            "learned", model, 0.5, data.veto_guard.min_span_similarity, data.known_words, checks
        )
        prob, ft, false = [], [], []
        for i, j in broad_pairs(
            pooled.indices(name), data.similarity, data.terms, data.known_words, REACH
        ):
            a, b = data.terms[i], data.terms[j]
            if guard.veto(a, b, edit_of(a, b, data.known_words)):
                continue
            p = guard.probability(float(data.similarity[i, j]), a, b, data.spans)
            if p >= 0.5:
                prob.append(p)
                ft.append(tables[name][(a.wording, b.wording)])
                false.append(data.clusters[i] != data.clusters[j])
        flags = np.array(false)
        row = {
            "served": len(flags),
            "false": int(flags.sum()),
            "ft_auc": round(flag_auc(-np.array(ft), flags), 3),
            "model_auc": round(flag_auc(-np.array(prob), flags), 3),
        }
        out[name] = row
        print(f"{name} | {row['served']} | {row['false']} | {row['ft_auc']} | {row['model_auc']}")
    return out


if __name__ == "__main__":
    main()
