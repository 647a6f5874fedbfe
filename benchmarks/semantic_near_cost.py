"""What the guard's near-duplicate model costs: one-word, meaning-preserving edits it refuses.

    python benchmarks/semantic_near_cost.py [--pairs benchmarks/data/oneword_paraphrases.jsonl]
        [--weights name=FILE,...] [--out FILE]

Each pair (`a`, `b`: one question, one word replaced, inserted or dropped; written for this
benchmark) is looked at as the cache would: the cosine of the two prompts' embeddings against
the shipped threshold, then the shipped guard (typo vocabulary, contrast checks, span rule) with
each weights file, in both orders (either prompt may be the cached one). A pair is *served* in
an order when the cosine reaches the threshold and the guard accepts. Prints, per weights file,
how many of the 2 x N orders are served and why the others are not (below the threshold, a
veto, the span rule, the near-duplicate model, the broad-rewrite model). The shipped weights
are always scored, as `shipped`.

`--context-sets name=PATH,...`: also how the span rule (every replaced span at cosine >=
`min_span_similarity`) would read the replaced spans widened by 0, 1 or 2 words of context on
each side ("calculate" / "compute" -> "to calculate the" / "to compute the"): how many of the
one-word pairs pass, and, in each prompt set, how many near-duplicate pairs of one cluster
(paraphrases) and across designed siblings (other questions) pass. Span embeddings only.
"""

from __future__ import annotations

import argparse
import difflib
import itertools
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.semantic_quality import EMBED_KWARGS, MemoModel  # noqa: E402
from config.semantic import SemanticCacheConfig  # noqa: E402
from gateway.semantic.cache import shipped_guard_weights  # noqa: E402
from gateway.semantic.embedder import load_model  # noqa: E402
from policies.semantic.edit_shape import _fold_typos as fold_typos  # noqa: E402
from policies.semantic.guard import (  # noqa: E402
    MAX_SPAN_PAIRS,
    NEAR_DUPLICATE_RATIO,
    Guard,
    GuardModel,
    SpanSimilarity,
    span_similarity_from,
)
from policies.semantic.pair_features import edit_of, prompt_terms  # noqa: E402


def reason(
    guard: Guard, cosine: float, threshold: float, a: str, b: str, span: SpanSimilarity
) -> str:
    """Why the cache would (not) serve cached prompt `b` for query `a`."""
    if cosine < threshold:
        return "below threshold"
    query, cached = prompt_terms(a), prompt_terms(b)
    edit = edit_of(query, cached, guard.known_words)
    if guard.veto(query, cached, edit):
        return "veto"
    p = guard.probability(cosine, query, cached, span)
    if p >= guard.min_probability:
        return "served"
    if edit.ratio < NEAR_DUPLICATE_RATIO:
        return "broad model"
    if p == 0.0:
        return "span rule"
    return "near model"


def widened_spans(a: str, b: str, known: frozenset[str], words: int) -> list[tuple[str, str]]:
    """Replaced spans of a near-duplicate edit with `words` tokens of context on each side
    (none for a broad rewrite, whose spans the span rule never reads)."""
    x, y = prompt_terms(a).tokens, prompt_terms(b).tokens
    x = fold_typos(x, y, known)
    matcher = difflib.SequenceMatcher(None, x, y, autojunk=False)
    if matcher.ratio() < NEAR_DUPLICATE_RATIO:
        return []
    return [
        (" ".join(x[max(0, i1 - words) : i2 + words]), " ".join(y[max(0, j1 - words) : j2 + words]))
        for tag, i1, i2, j1, j2 in matcher.get_opcodes()
        if tag == "replace"
    ][:MAX_SPAN_PAIRS]


def context_sweep(
    rows: list[dict[str, str]], sets: str, known: frozenset[str], span: SpanSimilarity, bar: float
) -> dict[str, object]:
    out: dict[str, object] = {}
    for words in (0, 1, 2):
        passing = [widened_spans(r["a"], r["b"], known, words) for r in rows]
        one = [min(span(p)) >= bar for p in passing if p]
        row: dict[str, object] = {"oneword": [sum(one), len(one)]}
        for item in filter(None, sets.split(",")):
            name, path = item.split("=", 1)
            prompts = [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]
            by_cluster: dict[str, list[str]] = defaultdict(list)
            for p in prompts:
                by_cluster[p["cluster"]].append(p["prompt"])
            kinds = {
                "same": [
                    (a, b) for c in by_cluster.values() for a, b in itertools.combinations(c, 2)
                ],
                "siblings": [
                    (p["prompt"], b)
                    for p in prompts
                    if p.get("sibling") in by_cluster and p["cluster"] < p["sibling"]
                    for b in by_cluster[p["sibling"]]
                ],
            }
            for kind, pairs in kinds.items():
                spans = [widened_spans(a, b, known, words) for a, b in pairs]
                ok = [min(span(s)) >= bar for s in spans if s]
                row[f"{name} {kind}"] = [sum(ok), len(ok)]
        out[str(words)] = row
        print(f"context {words} word(s) each side, passing the span rule: {row}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", default="benchmarks/data/oneword_paraphrases.jsonl")
    parser.add_argument("--weights", default="", help="name=FILE,... next to the shipped one")
    parser.add_argument("--context-sets", default="", help="name=PATH,... (see above)")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    rows = [json.loads(line) for line in Path(args.pairs).read_text().splitlines() if line]
    base = SemanticCacheConfig()
    threshold = base.categories["chat"].threshold
    raw = load_model(base.embedder)
    memo = MemoModel(raw)
    known = raw.whole_words() if base.guard.typo_vocabulary else frozenset()
    span = span_similarity_from(lambda texts: memo.encode(texts, **EMBED_KWARGS))
    models = {"shipped": GuardModel.from_json(shipped_guard_weights())}
    for item in filter(None, args.weights.split(",")):
        name, path = item.split("=", 1)
        models[name] = GuardModel.from_json(Path(path).read_text())
    texts = [t for r in rows for t in (r["a"], r["b"])]
    vectors = memo.encode(texts, **EMBED_KWARGS)
    report: dict[str, object] = {"pairs": args.pairs, "threshold": threshold, "models": {}}
    for name, model in models.items():
        guard = Guard(
            "learned",
            model,
            base.guard.min_probability,
            base.guard.min_span_similarity,
            known,
            base.guard.contrast_checks,
        )
        per_pair = []
        for k, r in enumerate(rows):
            cosine = float(vectors[2 * k] @ vectors[2 * k + 1])
            why = [
                reason(guard, cosine, threshold, r["a"], r["b"], span),
                reason(guard, cosine, threshold, r["b"], r["a"], span),
            ]
            per_pair.append({"id": r["id"], "cosine": round(cosine, 4), "orders": why})
        counts = Counter(w for p in per_pair for w in p["orders"])  # type: ignore[attr-defined]
        report["models"][name] = {"counts": dict(counts), "pairs": per_pair}  # type: ignore[index]
        served = counts["served"]
        print(f"{name:12s} served {served}/{2 * len(rows)} orders: {dict(counts)}")
        for p in per_pair:
            if p["orders"] != ["served", "served"]:
                r = rows[[x["id"] for x in rows].index(p["id"])]
                print(f"   {p['id']} cos {p['cosine']:.3f} {p['orders']}  {r['a']!r} / {r['b']!r}")
    if args.context_sets:
        report["context"] = context_sweep(
            rows, args.context_sets, known, span, base.guard.min_span_similarity
        )
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
