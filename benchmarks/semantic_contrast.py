"""The guard's contrast checks in the evaluation scripts: which ones a run uses, and what each
one vetoes among the pairs a lookup could weigh (the `contrast` mode of semantic_eval.py).

`--checks` names the contrast checks of a run (policies/semantic/contrast_checks.py): `none`,
`all`, or a comma-separated list; by default the shipped config's. The `contrast` mode scores
every check alone at pair level, without a replay: for each data set, every pair of prompts at
cosine >= `--min-cosine` that the shipped guard (without contrast checks) accepts in at least one
order, and how many of those accepted pairs each check vetoes, split into pairs of one cluster
(correct hits it would cost) and of two clusters (false hits it would remove). A pair counts
once however often a replay would meet it; replays (`quality`, `holdout`) give the figures of
record.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from config.semantic import SemanticCacheConfig
from gateway.semantic.cache import shipped_guard_weights
from gateway.semantic.embedder import load_model
from policies.semantic.contrast_checks import CHECKS
from policies.semantic.guard import Guard, GuardModel, span_similarity_from
from policies.semantic.pair_features import PromptTerms, prompt_terms


def contrast_checks(args: argparse.Namespace) -> tuple[str, ...]:
    """The checks a run names (`args.checks`), else the shipped config's."""
    spec = getattr(args, "checks", None)
    if spec is None:
        return tuple(SemanticCacheConfig().guard.contrast_checks)
    if spec == "none":
        return ()
    if spec == "all":
        return tuple(CHECKS)
    names = tuple(name.strip() for name in spec.split(",") if name.strip())
    unknown = [name for name in names if name not in CHECKS]
    if unknown:
        raise SystemExit(f"unknown contrast checks {unknown}; known: {', '.join(CHECKS)}")
    return names


def contrast(args: argparse.Namespace) -> dict[str, object]:
    # Here, not at the top: semantic_quality imports this module for `contrast_checks`.
    from benchmarks.semantic_quality import EMBED_KWARGS, MemoModel, load_rows

    base = SemanticCacheConfig()
    raw_model = load_model(base.embedder)
    memo = MemoModel(raw_model)
    known = raw_model.whole_words() if getattr(args, "typo_vocab", False) else frozenset()
    guard = Guard(
        "learned",
        GuardModel.from_json(shipped_guard_weights()),
        base.guard.min_probability,
        base.guard.min_span_similarity,
        known,
    )
    spans = span_similarity_from(lambda texts: memo.encode(texts, **EMBED_KWARGS))
    report: dict[str, object] = {"min_cosine": args.min_cosine, "typo_vocab": bool(known)}
    for name, path in (("dev", args.data), ("holdout", args.holdout)):
        rows = load_rows(path)
        vectors = memo.encode([r["prompt"] for r in rows], **EMBED_KWARGS)
        similarity = vectors @ vectors.T
        terms = [prompt_terms(r["prompt"]) for r in rows]
        first, second = np.nonzero(np.triu(similarity >= args.min_cosine, k=1))
        accepted = []
        for i, j in zip(first.tolist(), second.tolist(), strict=True):
            cosine = float(similarity[i, j])
            if guard.accepts(cosine, terms[i], terms[j], spans) or guard.accepts(
                cosine, terms[j], terms[i], spans
            ):
                accepted.append((i, j, rows[i]["cluster"] == rows[j]["cluster"]))
        per_check: dict[str, dict[str, int]] = {}
        for check_name, check in (*CHECKS.items(), ("all", None)):
            vetoed = [
                same
                for i, j, same in accepted
                if (
                    any(c(terms[i].tokens, terms[j].tokens) for c in CHECKS.values())
                    if check is None
                    else check(terms[i].tokens, terms[j].tokens)
                )
            ]
            per_check[check_name] = {
                "false_removed": vetoed.count(False),
                "correct_lost": vetoed.count(True),
            }
        report[name] = {
            "path": path,
            "cost": _cost(raw_model, rows, terms, [(i, j) for i, j, _ in accepted]),
            "accepted_same_cluster": sum(same for _, _, same in accepted),
            "accepted_other_cluster": sum(not same for _, _, same in accepted),
            "per_check": per_check,
        }
    return report


def _cost(
    model: object,
    rows: list[dict[str, str]],
    terms: list[PromptTerms],
    pairs: list[tuple[int, int]],
    repeats: int = 3,
) -> dict[str, float]:
    """Median time of every check on one pair (a pair no check vetoes pays all of them) against
    one prompt's embedding (what a lookup pays anyway), interleaved, `repeats` rounds over the
    first 60 pairs."""
    checks_s: list[float] = []
    embed_s: list[float] = []
    for _ in range(repeats):
        for i, j in pairs[:60]:
            start = time.perf_counter()
            for check in CHECKS.values():
                check(terms[i].tokens, terms[j].tokens)
            checks_s.append(time.perf_counter() - start)
            start = time.perf_counter()
            model.encode([rows[i]["prompt"]])  # type: ignore[attr-defined]
            embed_s.append(time.perf_counter() - start)
    checks, embed = statistics.median(checks_s), statistics.median(embed_s)
    return {"checks_us": checks * 1e6, "embed_us": embed * 1e6, "ratio": checks / embed}


def print_contrast(report: dict[str, object]) -> None:
    print(f"pairs at cosine >= {report['min_cosine']} that the shipped guard accepts")
    for name in ("dev", "holdout"):
        part = report[name]
        print(
            f"\n{name} ({part['path']}): {part['accepted_same_cluster']} same-cluster, "  # type: ignore[index]
            f"{part['accepted_other_cluster']} other-cluster pairs accepted"  # type: ignore[index]
        )
        print(f"  cost of all checks on a pair: {part['cost']}")  # type: ignore[index]
        print(f"  {'check':18s} {'false removed':>14s} {'correct lost':>13s}")
        for check, row in part["per_check"].items():  # type: ignore[index]
            print(f"  {check:18s} {row['false_removed']:14d} {row['correct_lost']:13d}")
