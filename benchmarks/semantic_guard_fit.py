"""Fit the guard's logistic model on prompt pairs (offline; numpy only).

Pairs are every two prompts whose embeddings are at least `min_cosine` alike: those are the
ones a lookup could ever weigh. The replaced spans of each pair are embedded with the same model
(memoised by the caller), exactly as the cache's guard does at lookup time. Label 1 when both
are in the same cluster. Used by semantic_quality.py inside cross-validation (fit on some
cluster groups, score on the others).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from policies.semantic.guard import (
    MAX_SPAN_CHARS,
    MAX_SPAN_PAIRS,
    NEAR_DUPLICATE_RATIO,
    GuardModel,
    SpanSimilarity,
)
from policies.semantic.pair_features import PromptTerms, edit_of, pair_features
from policies.semantic.pair_head import head_features
from policies.semantic.token_alignment import TokenEncoder, token_alignment_features
from policies.semantic.word_alignment import WordVectors, alignment_features


def candidate_pairs(
    indices: list[int], similarity: np.ndarray, min_cosine: float
) -> list[tuple[int, int]]:
    idx = np.asarray(indices)
    sub = similarity[np.ix_(idx, idx)]
    a, b = np.nonzero(np.triu(sub >= min_cosine, k=1))
    return [(int(idx[i]), int(idx[j])) for i, j in zip(a, b, strict=True)]


def fit_logistic(
    x: np.ndarray,
    y: np.ndarray,
    l2: float = 1.0,
    iters: int = 50,
    uses_alignment: bool = False,
    uses_tokens: bool = False,
    head_dim: int = 0,
    head_l2: float = 1.0,
    uses_cross: bool = False,
    cross_dim: int = 0,
    cross_orders: int = 1,
) -> GuardModel:
    """L2-regularised logistic regression by Newton's method on standardised features. The
    last 2 x `head_dim` columns (the pair head's embedding features), or the last 3 x
    `cross_dim` (the cross features' vector blocks), are shrunk by `head_l2` instead of `l2`:
    hundreds of them against a thousand pairs need their own, stronger pull."""
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-6] = 1.0
    z = np.hstack([np.ones((len(x), 1)), (x - mean) / scale])
    w = np.zeros(z.shape[1])
    reg = np.full(z.shape[1], l2)
    if head_dim and uses_cross:
        raise ValueError("the pair head and the cross features are fitted one at a time")
    if head_dim:
        reg[-2 * head_dim :] = head_l2
    if uses_cross and cross_dim:
        reg[-3 * cross_dim :] = head_l2  # the cross vector blocks end the row
    reg[0] = 0.0  # the bias is not shrunk
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(z @ w, -60, 60)))
        grad = z.T @ (p - y) + reg * w
        hess = (z * (p * (1 - p))[:, None]).T @ z + np.diag(reg) + 1e-9 * np.eye(len(w))
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return GuardModel(
        weights=tuple(float(v) for v in w[1:]),
        bias=float(w[0]),
        mean=tuple(float(v) for v in mean),
        scale=tuple(float(v) for v in scale),
        uses_alignment=uses_alignment,
        uses_tokens=uses_tokens,
        head_dim=head_dim,
        uses_cross=uses_cross,
        cross_dim=cross_dim,
        cross_orders=cross_orders,
    )


def pair_rows(
    pairs: list[tuple[int, int]],
    similarity: np.ndarray,
    terms: list[PromptTerms],
    span_similarity: SpanSimilarity,
    word_vectors: WordVectors | None = None,
    token_states: TokenEncoder | None = None,
    known_words: frozenset[str] = frozenset(),
    vectors: np.ndarray | None = None,
) -> np.ndarray:
    """Feature rows for `pairs`, with the replaced spans embedded as the guard embeds them;
    with `vectors` (the prompts' unit embeddings, by index) the pair-head features last."""
    rows = []
    for i, j in pairs:
        edit = edit_of(terms[i], terms[j], known_words)
        spans = [
            (x[:MAX_SPAN_CHARS], y[:MAX_SPAN_CHARS]) for x, y in edit.replaced[:MAX_SPAN_PAIRS]
        ]
        lowest = min([1.0, *span_similarity(spans)]) if spans else 1.0
        row = pair_features(float(similarity[i, j]), terms[i], terms[j], edit, lowest)
        if word_vectors is not None:
            row += alignment_features(terms[i].tokens, terms[j].tokens, word_vectors)
        if token_states is not None:
            row += token_alignment_features(*token_states([terms[i].wording, terms[j].wording]))
        if vectors is not None:
            row += head_features(vectors[i], vectors[j]).tolist()
        rows.append(row)
    return np.array(rows)


def fit_guard(
    indices: list[int],
    similarity: np.ndarray,
    terms: list[PromptTerms],
    clusters: list[str],
    span_similarity: SpanSimilarity,
    min_cosine: float = 0.6,
    l2: float = 1.0,
    word_vectors: WordVectors | None = None,
    token_states: TokenEncoder | None = None,
    known_words: frozenset[str] = frozenset(),
) -> GuardModel:
    """Every pair a lookup could weigh (cosine >= `min_cosine`, below every threshold tried)
    that the model would decide: a broad rewrite (near-duplicates are decided by the guard's
    span rule, not by the model). Vetoed pairs stay in: the veto is a rule on top."""
    pairs = broad_pairs(indices, similarity, terms, known_words, min_cosine)
    x = pair_rows(
        pairs, similarity, terms, span_similarity, word_vectors, token_states, known_words
    )
    y = np.array([clusters[i] == clusters[j] for i, j in pairs], dtype=float)
    return fit_logistic(
        x,
        y,
        l2=l2,
        uses_alignment=word_vectors is not None,
        uses_tokens=token_states is not None,
    )


def broad_pairs(
    indices: list[int],
    similarity: np.ndarray,
    terms: list[PromptTerms],
    known_words: frozenset[str] = frozenset(),
    min_cosine: float = 0.6,
) -> list[tuple[int, int]]:
    """The pairs the guard's model decides: cosine >= `min_cosine` and a broad rewrite."""
    return [
        (i, j)
        for i, j in candidate_pairs(indices, similarity, min_cosine)
        if edit_of(terms[i], terms[j], known_words).ratio < NEAR_DUPLICATE_RATIO
    ]


# Shrinkage of the pair head's embedding features, chosen per training set by an inner
# cross-validation by cluster group (held-out log loss of the broad-rewrite pairs).
HEAD_L2_GRID = (1.0, 10.0, 100.0, 1000.0, 10000.0)
INNER_FOLDS = 4


def log_loss(model: GuardModel, x: np.ndarray, y: np.ndarray) -> float:
    p = np.array([model.probability(row) for row in x]).clip(1e-9, 1 - 1e-9)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).sum())


def fit_pair_head(
    indices: list[int],
    similarity: np.ndarray,
    terms: list[PromptTerms],
    clusters: list[str],
    groups: list[str],
    span_similarity: SpanSimilarity,
    vectors: np.ndarray,
    known_words: frozenset[str] = frozenset(),
    grid: tuple[float, ...] = HEAD_L2_GRID,
) -> tuple[GuardModel, float, dict[float, float]]:
    """The guard's model with the pair head (|u - v|, u * v after the 15 cheap features), on
    the same broad-rewrite pairs as `fit_guard`. The head's shrinkage is chosen inside
    `indices` only: inner folds by cluster group (`groups[i]`: prompt i's group, siblings
    together); a pair is scored in an inner fold when both prompts are in it and trained on
    when neither is. Returns the model refitted on all pairs, the chosen l2, the inner losses."""
    pairs = broad_pairs(indices, similarity, terms, known_words)
    x = pair_rows(
        pairs, similarity, terms, span_similarity, known_words=known_words, vectors=vectors
    )
    y = np.array([clusters[i] == clusters[j] for i, j in pairs], dtype=float)
    dim = vectors.shape[1]

    def fit(x: np.ndarray, y: np.ndarray, l2: float) -> GuardModel:
        return fit_logistic(x, y, head_dim=dim, head_l2=l2)

    return shrinkage_by_inner_cv(x, y, pairs, groups, indices, grid, fit)


def shrinkage_by_inner_cv(
    x: np.ndarray,
    y: np.ndarray,
    pairs: list[tuple[int, int]],
    groups: list[str],
    indices: list[int],
    grid: Sequence[float],
    fit: Callable[[np.ndarray, np.ndarray, float], GuardModel],
) -> tuple[GuardModel, float, dict[float, float]]:
    """The head's L2 shrinkage chosen by an inner cross-validation by cluster group (a pair is
    scored only in the fold holding both its prompts' groups; held-out log loss, ties to the
    larger shrinkage); returns the model refitted on all pairs, the choice and the losses."""
    group_ids = sorted({groups[i] for i in indices})
    np.random.default_rng(0).shuffle(group_ids)
    inner = {g: k % INNER_FOLDS for k, g in enumerate(group_ids)}
    fold_a = np.array([inner[groups[i]] for i, _ in pairs])
    fold_b = np.array([inner[groups[j]] for _, j in pairs])
    losses = {}
    for l2 in grid:
        loss = 0.0
        for k in range(INNER_FOLDS):
            train = (fold_a != k) & (fold_b != k)
            test = (fold_a == k) & (fold_b == k)
            if not test.any() or len(set(y[train])) < 2:
                continue
            loss += log_loss(fit(x[train], y[train], l2), x[test], y[test])
        losses[l2] = loss
    chosen = min(grid, key=lambda l2: (losses[l2], -l2))
    return fit(x, y, chosen), chosen, losses
