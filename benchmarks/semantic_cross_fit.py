"""Fit the guard's model with cross-encoded pair features (offline; numpy + the real encoder).

Same pairs and labels as `fit_guard` / `fit_pair_head` (benchmarks/semantic_guard_fit.py): every
broad rewrite with cosine >= 0.6 among the training prompts, label 1 when both are in the same
cluster. Each pair gets the 15 cheap features plus the cross features of policies/semantic/
cross_pair.py, from a joint pass over (a, b) (and (b, a) with `orders` 2) of the prompts'
wordings, exactly as the guard computes them at lookup time. With the vector blocks their
shrinkage is chosen inside the training set by an inner cross-validation by cluster group.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmarks.semantic_guard_fit import (
    HEAD_L2_GRID,
    broad_pairs,
    fit_logistic,
    pair_rows,
    shrinkage_by_inner_cv,
)
from gateway.semantic.cross_encoder import joint_states
from policies.semantic.cross_pair import JointEncoder, JointStates, cross_features
from policies.semantic.guard import GuardModel, SpanSimilarity
from policies.semantic.pair_features import PromptTerms


@dataclass(frozen=True)
class CrossSpec:
    """Which cross features: the vector blocks or scalars only, one order or both."""

    vectors: bool = True
    orders: int = 1


def cross_rows(
    pairs: list[tuple[int, int]],
    terms: list[PromptTerms],
    vectors: np.ndarray,
    joint: JointEncoder,
    spec: CrossSpec,
) -> np.ndarray:
    """Cross feature rows of `pairs` (prompt indices), all joint passes in one call."""
    wanted = [(terms[i].wording, terms[j].wording) for i, j in pairs]
    if spec.orders == 2:
        wanted += [(b, a) for a, b in wanted]
    keys = list(dict.fromkeys(wanted))
    states = dict(zip(keys, joint(keys), strict=True))
    rows = []
    for i, j in pairs:
        a, b = terms[i].wording, terms[j].wording
        joints = [states[(a, b)]] + ([states[(b, a)]] if spec.orders == 2 else [])
        rows.append(cross_features(joints, vectors[i], vectors[j], spec.vectors))
    return np.array(rows)


def fit_cross_pair(
    indices: list[int],
    similarity: np.ndarray,
    terms: list[PromptTerms],
    clusters: list[str],
    groups: list[str],
    span_similarity: SpanSimilarity,
    vectors: np.ndarray,
    joint: JointEncoder,
    spec: CrossSpec,
    known_words: frozenset[str] = frozenset(),
    grid: tuple[float, ...] = HEAD_L2_GRID,
) -> tuple[GuardModel, float, dict[float, float]]:
    """The guard's model with cross features, on the broad-rewrite pairs of `indices`. The
    vector blocks' shrinkage comes from inner folds by cluster group inside `indices` (a pair
    is scored in a fold when both prompts are in it, trained on when neither is); scalars only
    need no inner search. Returns the refitted model, the chosen l2, the inner losses."""
    pairs = broad_pairs(indices, similarity, terms, known_words)
    base = pair_rows(pairs, similarity, terms, span_similarity, known_words=known_words)
    x = np.hstack([base, cross_rows(pairs, terms, vectors, joint, spec)])
    y = np.array([clusters[i] == clusters[j] for i, j in pairs], dtype=float)
    dim = vectors.shape[1] if spec.vectors else 0
    kwargs = {"uses_cross": True, "cross_dim": dim, "cross_orders": spec.orders}
    if not dim:
        return fit_logistic(x, y, **kwargs), 1.0, {}  # type: ignore[arg-type]

    def fit(x: np.ndarray, y: np.ndarray, l2: float) -> GuardModel:
        return fit_logistic(x, y, head_l2=l2, **kwargs)  # type: ignore[arg-type]

    return shrinkage_by_inner_cv(x, y, pairs, groups, indices, grid, fit)


def cross_spec(args: argparse.Namespace) -> CrossSpec | None:
    """The cross features asked for on the command line (`--cross`, `--cross-orders`)."""
    kind = getattr(args, "cross", "off")
    if kind == "off":
        return None
    return CrossSpec(vectors=kind == "vectors", orders=getattr(args, "cross_orders", 1))


def memo_joint_states(
    memo: dict[tuple[str, str], JointStates], model: Any, pairs: list[tuple[str, str]]
) -> list[JointStates]:
    """Joint passes of `pairs` over `model`, each distinct pair computed once into `memo`."""
    missing = list(dict.fromkeys(p for p in pairs if p not in memo))
    if missing:
        memo.update(zip(missing, joint_states(model, missing), strict=True))
    return [memo[p] for p in pairs]


def logged(
    fitted: tuple[GuardModel, float, dict[float, float]], sink: list[dict[str, object]]
) -> GuardModel:
    """The model of a `fit_cross_pair` result; its l2 and inner losses go to `sink` and stdout."""
    model, l2, losses = fitted
    sink.append({"l2": l2, "inner_log_loss": {str(k): v for k, v in losses.items()}})
    print(f"cross pair: l2 {l2}, inner log loss {losses}", flush=True)
    return model
