"""Fit the guard's logistic model on prompt pairs (offline; numpy only).

Pairs are every two prompts whose embeddings are at least `min_cosine` alike: those are the
ones a lookup could ever weigh. The replaced spans of each pair are embedded with the same model
(memoised by the caller), exactly as the cache's guard does at lookup time. Label 1 when both
are in the same cluster. Used by semantic_quality.py inside cross-validation (fit on some
cluster groups, score on the others).
"""

from __future__ import annotations

import numpy as np

from policies.semantic.guard import (
    MAX_SPAN_CHARS,
    MAX_SPAN_PAIRS,
    NEAR_DUPLICATE_RATIO,
    GuardModel,
    SpanSimilarity,
)
from policies.semantic.pair_features import PromptTerms, edit_of, pair_features
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
) -> GuardModel:
    """L2-regularised logistic regression by Newton's method on standardised features."""
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-6] = 1.0
    z = np.hstack([np.ones((len(x), 1)), (x - mean) / scale])
    w = np.zeros(z.shape[1])
    reg = np.full(z.shape[1], l2)
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
    )


def pair_rows(
    pairs: list[tuple[int, int]],
    similarity: np.ndarray,
    terms: list[PromptTerms],
    span_similarity: SpanSimilarity,
    word_vectors: WordVectors | None = None,
    token_states: TokenEncoder | None = None,
    known_words: frozenset[str] = frozenset(),
) -> np.ndarray:
    """Feature rows for `pairs`, with the replaced spans embedded as the guard embeds them."""
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
    pairs = [
        (i, j)
        for i, j in candidate_pairs(indices, similarity, min_cosine)
        if edit_of(terms[i], terms[j], known_words).ratio < NEAR_DUPLICATE_RATIO
    ]
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
