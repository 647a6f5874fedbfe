"""Fitting the guard on pooled prompt sets (benchmarks/semantic_pooled_fit.py), on a few real
prompts written for this test: pairs stay inside one set, the near-duplicate model sees exactly
the pairs the span rule would serve, and candidates parse."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.semantic_pooled_fit import (
    Candidate,
    PooledData,
    fit_candidate,
    near_duplicate_pairs,
)
from gateway.semantic.cache import shipped_guard_weights
from gateway.semantic.cross_encoder import joint_states
from policies.semantic.cross_pair import CROSS_SCALAR_NAMES
from policies.semantic.guard import Guard, GuardModel, span_similarity_from
from policies.semantic.pair_features import prompt_terms
from policies.semantic.token_alignment import TokenStateCache
from policies.semantic.word_alignment import WordVectors

# (set, cluster, prompt); clusters "a1"/"a2" and "b1"/"b2" are hard-negative siblings.
PROMPTS = [
    ("one", "a1", "suggest some names for my bakery"),
    ("one", "a1", "give me a few name ideas for my bakery"),
    ("one", "a2", "suggest some names for my vegan bakery"),
    ("one", "a3", "how do I undo the last git commit"),
    ("one", "a3", "undo my last commit in git"),
    ("two", "b1", "what is the largest bird in the world"),
    ("two", "b1", "which bird is the largest in the world"),
    ("two", "b2", "what is the largest flying bird in the world"),
    ("two", "b3", "suggest some names for my small bakery"),
]


@pytest.fixture(scope="module")
def data(st_model) -> PooledData:  # type: ignore[no-untyped-def]
    def encode(texts: list[str]) -> np.ndarray:
        return st_model.encode(texts, normalize_embeddings=True, show_progress_bar=False)

    vectors = encode([p for _, _, p in PROMPTS])
    shipped = GuardModel.from_json(shipped_guard_weights())
    return PooledData(
        similarity=vectors @ vectors.T,
        terms=[prompt_terms(p) for _, _, p in PROMPTS],
        clusters=[c for _, c, _ in PROMPTS],
        groups=[c[0] for _, c, _ in PROMPTS],  # a cluster's siblings share its letter
        sets=[s for s, _, _ in PROMPTS],
        spans=span_similarity_from(encode),
        known_words=frozenset(),
        veto_guard=Guard("learned", shipped),
        vectors=vectors,
        word_vectors=WordVectors(encode),
        token_states=TokenStateCache(st_model.token_states),
        joint=lambda pairs: joint_states(st_model, pairs),
    )


def test_candidates_parse_and_unknown_parts_fail():
    cand = Candidate.parse("pooled+near+idf")
    assert (cand.near, cand.idf, cand.chosen, cand.head) == (True, True, False, False)
    with pytest.raises(ValueError):
        Candidate.parse("pooled+nearr")
    with pytest.raises(ValueError):
        Candidate.parse("shipped+near")


def test_near_duplicate_pairs_are_the_ones_the_span_rule_serves(data: PooledData):
    pairs = near_duplicate_pairs(list(range(len(PROMPTS))), data)
    texts = {(PROMPTS[i][2], PROMPTS[j][2]) for i, j in pairs}
    # The inserted qualifier: a near-duplicate with nothing replaced, served by the span rule.
    assert ("suggest some names for my bakery", "suggest some names for my vegan bakery") in texts
    assert (
        "what is the largest bird in the world",
        "what is the largest flying bird in the world",
    ) in texts
    # The same content words in other words are served outright, never by a model.
    assert all("undo" not in a for a, _ in texts)
    # A broad rewrite is the broad model's.
    assert all(1 not in pair for pair in pairs)


def test_pairs_never_cross_sets(data: PooledData):
    everything = list(range(len(PROMPTS)))
    crossing = near_duplicate_pairs(everything, data)
    assert any(data.sets[i] != data.sets[j] for i, j in crossing)  # "small bakery"
    per_set = [p for part in data.by_set(everything) for p in near_duplicate_pairs(part, data)]
    assert all(data.sets[i] == data.sets[j] for i, j in per_set)
    model, info = fit_candidate(everything, data, Candidate.parse("pooled+near"))
    assert info["near_pairs"] == len(per_set) < len(crossing)
    # Every near-duplicate pair here is two siblings (label 0): no model without both labels.
    assert info["near_positive"] == 0 and model.near_duplicate is None
    assert len(model.weights) == len(model.feature_names)


def test_cross_parts_put_the_joint_features_last_in_the_broad_model(data: PooledData):
    everything = list(range(len(PROMPTS)))
    plain, _ = fit_candidate(everything, data, Candidate.parse("pooled+near+idf"))
    model, _ = fit_candidate(everything, data, Candidate.parse("pooled+near+idf+cross"))
    assert model.uses_cross and model.cross_dim == 0 and model.cross_orders == 1
    assert model.feature_names == plain.feature_names + CROSS_SCALAR_NAMES
    assert len(model.weights) == len(model.feature_names)
    # The near model never asks for a joint pass.
    assert model.near_duplicate is None or not model.near_duplicate.uses_cross
    # The weights file keeps the cross parts.
    again = GuardModel.from_dict(model.to_dict())
    assert (again.uses_cross, again.feature_names) == (True, model.feature_names)
    both, _ = fit_candidate(everything, data, Candidate.parse("pooled+cross2+crossvec"))
    assert both.cross_orders == 2 and both.cross_dim == data.vectors.shape[1]
    with pytest.raises(ValueError):
        fit_candidate(everything, data, Candidate.parse("pooled+head+cross"))


def test_a_cross_model_needs_the_joint_pass_at_lookup(data: PooledData):
    model, _ = fit_candidate(list(range(len(PROMPTS))), data, Candidate.parse("pooled+cross"))
    guard = Guard("learned", model)
    i, j = 0, 1  # one cluster, said in other words: a broad rewrite the model decides
    a, b = data.terms[i], data.terms[j]
    vectors = (data.vectors[i], data.vectors[j])
    with_joint = guard.probability(
        float(data.similarity[i, j]), a, b, data.spans, vectors=vectors, joint=data.joint
    )
    assert 0.0 < with_joint < 1.0
    # Without the joint pass a cross model misses (the safe answer).
    assert guard.probability(float(data.similarity[i, j]), a, b, data.spans) == 0.0


def test_knn_part_banks_the_broad_pairs_it_was_fitted_on(data: PooledData):
    model, info = fit_candidate(list(range(len(PROMPTS))), data, Candidate.parse("pooled+knn"))
    assert model.pair_bank is not None and model.needs_vectors
    assert model.feature_names[-1] == "knn_different_share"
    assert len(model.pair_bank.directions) == info["broad_pairs"] == len(model.pair_bank.different)
    assert len(model.weights) == len(model.feature_names)
