"""Fit the guard's model on pooled prompt sets (numpy only; used by semantic_pooled.py).

A candidate is the shipped head's recipe with optional parts, named `pooled[+idf][+near]
[+chosen]`:
- `pooled`: the 15 cheap features (pair_features.py), fitted on the broad-rewrite pairs of the
  training sets, as `fit_guard` fits them on the dev set; its L2 shrinkage chosen by an inner
  cross-validation by cluster group (`shrinkage_by_inner_cv`);
- `idf`: + two IDF-weighted features of the words only one side has (term_weights.py), the
  IDF table counted on the training prompts only and shipped in the weights;
- `near`: + a second model over the same cheap features that also scores the near-duplicate
  edits the span rule passes (which the shipped guard serves outright): fitted on exactly the
  training pairs that reach it (cosine >= 0.6, near-duplicate, not vetoed, not the same words,
  every replaced span similar);
- `align`, `tokens`, `head`: + the earlier experiments' features (content-word alignment,
  contextual token alignment, the pair head's |u - v| and u * v with its own shrinkage chosen
  by the inner cross-validation), now fitted on pooled data;
- `chosen`: threshold and probability cut chosen on the training sets (semantic_pooled.py),
  else the shipped 0.75 / 0.5;
- `cross`: + the cross-encoded pair scalars (policies/semantic/cross_pair.py: one joint pass of
  (a, b) through the embedding model) last in the broad-rewrite model; `crossvec`: with the
  vector blocks too (their shrinkage by the inner cross-validation); `cross2`: both orders,
  (a, b) and (b, a), averaged (two joint passes). The near model never uses them;
- `knn`: + the share of different-answer pairs among the 10 training pairs whose embedding
  difference is most parallel (policies/semantic/pair_knn.py); on the training pairs each
  set's rows read a bank of the other training sets' pairs only (as a lookup reads pairs of
  other writers), the shipped bank holds all of them;
- `ftveto`: a pair the fitted model would serve (near-duplicate or broad) needs the fine-tuned
  cross-encoder's p(same answer) (gateway/semantic/pair_model.py, both orders averaged) of at
  least FT_VETO_CUT; the cut was fixed before any left-out result (no fit). The probabilities
  come from semantic_pair_train.py `--loso` (the model trained on the other sets only).
Pairs are formed within one prompt set only: a lookup only ever weighs prompts of its own set.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from benchmarks.semantic_cross_fit import CrossSpec, cross_rows
from benchmarks.semantic_guard_fit import (
    HEAD_L2_GRID,
    broad_pairs,
    candidate_pairs,
    fit_logistic,
    pair_rows,
    shrinkage_by_inner_cv,
)
from policies.semantic.cross_pair import JointEncoder
from policies.semantic.guard import (
    MAX_SPAN_CHARS,
    MAX_SPAN_PAIRS,
    NEAR_DUPLICATE_RATIO,
    Guard,
    GuardModel,
    SpanSimilarity,
    filler_edit,
    one_word_swap,
)
from policies.semantic.pair_features import FEATURE_NAMES, PromptTerms, edit_of
from policies.semantic.pair_knn import DEFAULT_K, PairBank, different_share, unit_directions
from policies.semantic.polarity import polarity_features
from policies.semantic.term_weights import (
    IDF_FEATURE_NAMES,
    TermWeights,
    fit_term_weights,
    idf_features,
)
from policies.semantic.token_alignment import TokenEncoder
from policies.semantic.word_alignment import WordVectors

L2_GRID = (0.1, 1.0, 10.0, 100.0)
MIN_COSINE = 0.6  # below every threshold a candidate may choose
# `+reach`: only pairs at or above the shipped threshold, the ones a lookup ever asks about.
REACH_COSINE = 0.75
# `+synonym`: a one-word swap embedding at least this close is served without the near
# model (GuardModel.serve_span_similarity; session 6).
SYNONYM_SPAN = 0.9
# `+ftveto`: the fine-tuned cross-encoder's cut, fixed in advance (its own decision boundary).
FT_VETO_CUT = 0.5
PARTS = (
    "idf",
    "near",
    "chosen",
    "align",
    "tokens",
    "head",
    "reach",
    "polarity",
    "synonym",
    "filler",
    "cross",
    "crossvec",
    "cross2",
    "knn",
    "ftveto",
)


@dataclass(frozen=True)
class Candidate:
    name: str
    idf: bool = False
    near: bool = False
    chosen: bool = False
    align: bool = False
    tokens: bool = False
    head: bool = False
    reach: bool = False
    polarity: bool = False
    synonym: bool = False
    filler: bool = False
    cross: bool = False
    crossvec: bool = False
    cross2: bool = False
    knn: bool = False
    ftveto: bool = False

    @property
    def cross_spec(self) -> CrossSpec | None:
        """The cross features of the broad-rewrite model, or None."""
        if not (self.cross or self.crossvec or self.cross2):
            return None
        return CrossSpec(vectors=self.crossvec, orders=2 if self.cross2 else 1)

    @property
    def min_cosine(self) -> float:
        return REACH_COSINE if self.reach else MIN_COSINE

    @classmethod
    def parse(cls, name: str) -> Candidate:
        head, *parts = name.split("+")
        unknown = [p for p in parts if p not in PARTS]
        if head != "pooled" or unknown:
            raise ValueError(f"candidate {name!r}: pooled[+idf][+near][+chosen]")
        return cls(name, *(p in parts for p in PARTS))


@dataclass
class PooledData:
    """The pooled prompts, by index: everything a fit reads."""

    similarity: np.ndarray
    terms: list[PromptTerms]
    clusters: list[str]
    groups: list[str]  # cluster group (a cluster and its siblings) of each prompt
    sets: list[str]  # the prompt set each prompt came from
    spans: SpanSimilarity
    known_words: frozenset[str]
    # The guard whose vetoes decide which near-duplicate pairs ever reach a near model.
    veto_guard: Guard
    vectors: np.ndarray  # unit prompt embeddings (the pair head's input)
    word_vectors: WordVectors
    token_states: TokenEncoder
    # Joint passes over wording pairs (a candidate with cross features needs it).
    joint: JointEncoder | None = None

    def by_set(self, indices: list[int]) -> list[list[int]]:
        out: dict[str, list[int]] = {}
        for i in indices:
            out.setdefault(self.sets[i], []).append(i)
        return list(out.values())


def fit_candidate(
    indices: list[int], data: PooledData, cand: Candidate
) -> tuple[GuardModel, dict[str, object]]:
    """The candidate's model fitted on `indices` only, and what was chosen inside."""
    weights = fit_term_weights(data.terms[i].content for i in indices) if cand.idf else None
    pairs = [
        p for part in data.by_set(indices) for p in broad_pairs(part, *_broad_args(data, cand))
    ]
    model, l2, _ = _fit_rows(pairs, indices, data, weights, cand)
    info: dict[str, object] = {"broad_pairs": len(pairs), "l2": l2}
    if cand.near:
        near_pairs = [
            p
            for part in data.by_set(indices)
            for p in near_duplicate_pairs(
                part, data, cand.min_cosine, SYNONYM_SPAN if cand.synonym else None, cand.filler
            )
        ]
        y = [data.clusters[i] == data.clusters[j] for i, j in near_pairs]
        info["near_pairs"], info["near_positive"] = len(near_pairs), int(sum(y))
        if 0 < sum(y) < len(y):
            near, near_l2, _ = _fit_rows(near_pairs, indices, data, weights, Candidate("near"))
            model = replace(model, near_duplicate=near)
            info["near_l2"] = near_l2
            if cand.synonym:
                model = replace(model, serve_span_similarity=SYNONYM_SPAN)
            model = replace(model, serve_filler_edits=cand.filler)
    if cand.ftveto:
        model = replace(model, min_pair_probability=FT_VETO_CUT)
    return model, info


def _broad_args(
    data: PooledData, cand: Candidate
) -> tuple[np.ndarray, list[PromptTerms], frozenset[str], float]:
    return data.similarity, data.terms, data.known_words, cand.min_cosine


def _fit_rows(
    pairs: list[tuple[int, int]],
    indices: list[int],
    data: PooledData,
    weights: TermWeights | None,
    cand: Candidate,
) -> tuple[GuardModel, float, dict[float, float]]:
    """Rows in GuardModel order (cheap, IDF, alignment, tokens, head); the L2 shrinkage (with
    `head`: the head's) chosen by the inner cross-validation by group."""
    x = pair_rows(
        pairs,
        data.similarity,
        data.terms,
        data.spans,
        data.word_vectors if cand.align else None,
        data.token_states if cand.tokens else None,
        data.known_words,
        data.vectors if cand.head else None,
    )
    if weights is not None:
        extra = [idf_features(data.terms[i], data.terms[j], weights) for i, j in pairs]
        cheap = len(FEATURE_NAMES)
        x = np.hstack([x[:, :cheap], np.array(extra), x[:, cheap:]])
    if cand.polarity:
        at = len(FEATURE_NAMES) + (len(IDF_FEATURE_NAMES) if weights is not None else 0)
        extra = [polarity_features(data.terms[i].tokens, data.terms[j].tokens) for i, j in pairs]
        x = np.hstack([x[:, :at], np.array(extra), x[:, at:]])
    bank = None
    if cand.knn:
        bank, column = _pair_bank(pairs, data)
        x = np.hstack([x, column[:, None]])
    spec = cand.cross_spec
    cross: dict[str, object] = {}
    if spec is not None:
        if cand.head or data.joint is None:
            raise ValueError("cross features need a joint encoder and no pair head")
        x = np.hstack([x, cross_rows(pairs, data.terms, data.vectors, data.joint, spec)])
        cross_dim = data.vectors.shape[1] if spec.vectors else 0
        cross = {"uses_cross": True, "cross_dim": cross_dim, "cross_orders": spec.orders}
    y = np.array([data.clusters[i] == data.clusters[j] for i, j in pairs], dtype=float)
    dim = data.vectors.shape[1] if cand.head else 0
    blocks = dim or int(cross.get("cross_dim", 0))  # type: ignore[call-overload]

    def fit(x: np.ndarray, y: np.ndarray, l2: float) -> GuardModel:
        model = fit_logistic(
            x,
            y,
            l2=1.0 if blocks else l2,
            head_dim=dim,
            head_l2=l2,
            **cross,  # type: ignore[arg-type]
        )
        return replace(
            model, uses_alignment=cand.align, uses_tokens=cand.tokens, uses_polarity=cand.polarity
        )

    grid = HEAD_L2_GRID if blocks else L2_GRID
    model, l2, losses = shrinkage_by_inner_cv(x, y, pairs, data.groups, indices, grid, fit)
    return replace(model, idf=weights, pair_bank=bank), l2, losses


def _pair_bank(pairs: list[tuple[int, int]], data: PooledData) -> tuple[PairBank, np.ndarray]:
    """The bank of `pairs` and their own feature column, each pair's read from the pairs of
    the other sets only (leave-set-out: a lookup's pair is never in the bank it reads)."""
    first = np.array([i for i, _ in pairs], dtype=np.int64)
    second = np.array([j for _, j in pairs], dtype=np.int64)
    directions = unit_directions(data.vectors[first], data.vectors[second])
    different = np.array([data.clusters[i] != data.clusters[j] for i, j in pairs])
    sets = np.array([data.sets[i] for i, _ in pairs])
    column = np.zeros(len(pairs))
    for name in set(sets.tolist()):
        mine = sets == name
        column[mine] = different_share(
            directions[mine], directions[~mine], different[~mine], DEFAULT_K
        )
    return PairBank(directions, different, DEFAULT_K), column


def near_duplicate_pairs(
    indices: list[int],
    data: PooledData,
    min_cosine: float = MIN_COSINE,
    serve_span: float | None = None,
    serve_fillers: bool = False,
) -> list[tuple[int, int]]:
    """Pairs a near-duplicate model would decide in at least one order: cosine >= `min_cosine`,
    a near-duplicate edit, no veto, not the same words, every replaced span similar enough
    (and, with `serve_span`, not a one-word swap at least that similar: served)."""
    guard, terms = data.veto_guard, data.terms
    out = []
    for i, j in candidate_pairs(indices, data.similarity, min_cosine):
        a, b = terms[i], terms[j]
        edit = edit_of(a, b, data.known_words)
        if edit.ratio < NEAR_DUPLICATE_RATIO:
            continue
        if guard.veto(a, b, edit) and guard.veto(b, a, edit_of(b, a, data.known_words)):
            continue
        if (a.content, a.numbers, a.negations) == (b.content, b.numbers, b.negations):
            continue
        spans = [(x[:MAX_SPAN_CHARS], y[:MAX_SPAN_CHARS]) for x, y in edit.replaced]
        lowest = min([1.0, *data.spans(spans[:MAX_SPAN_PAIRS])]) if spans else 1.0
        if serve_span is not None and one_word_swap(edit) and lowest >= serve_span:
            continue
        if serve_fillers and filler_edit(a, b, edit):
            continue
        if lowest >= guard.min_span_similarity:
            out.append((i, j))
    return out
