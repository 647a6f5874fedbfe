"""The guard's pair head: |u - v| and u * v of the two prompts' embeddings as model features."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks.semantic_guard_fit import fit_logistic
from gateway.semantic.cache import build_guard
from policies.semantic.guard import Guard, GuardModel, feature_names, span_similarity_from
from policies.semantic.pair_features import FEATURE_NAMES, prompt_terms
from policies.semantic.pair_head import head_dim, head_feature_names, head_features

QUERY = "How do I reverse a string in Python?"
# A broad rewrite of QUERY (few shared tokens, other content words): the model decides it.
REWRITE = "python flip string backwards"


@pytest.fixture
def span_similarity(st_model):  # type: ignore[no-untyped-def]
    return span_similarity_from(
        lambda texts: st_model.encode(texts, normalize_embeddings=True, show_progress_bar=False)
    )


def unit(rng: np.random.Generator, dim: int) -> np.ndarray:
    v = rng.standard_normal(dim)
    return v / np.linalg.norm(v)


def head_model(dim: int, bias: float, product_weight: float = 0.0) -> GuardModel:
    n = len(FEATURE_NAMES) + 2 * dim
    weights = [0.0] * (len(FEATURE_NAMES) + dim) + [product_weight] * dim
    return GuardModel(
        weights=tuple(weights), bias=bias, mean=(0.0,) * n, scale=(1.0,) * n, head_dim=dim
    )


def test_head_features_are_symmetric_and_hold_the_cosine():
    rng = np.random.default_rng(0)
    u, v = unit(rng, 8), unit(rng, 8)
    row = head_features(u, v)
    assert row.shape == (16,)
    assert np.allclose(row, head_features(v, u))
    assert np.allclose(row[:8], np.abs(u - v))
    assert row[8:].sum() == pytest.approx(float(u @ v))
    with pytest.raises(ValueError):
        head_features(u, unit(rng, 4))


def test_weights_file_round_trip_and_feature_order():
    model = head_model(3, bias=0.5, product_weight=2.0)
    assert model.feature_names == FEATURE_NAMES + head_feature_names(3)
    again = GuardModel.from_json(model.to_json())
    assert again == model and again.head_dim == 3
    assert head_dim(feature_names(False, False)) == 0
    # Head features anywhere but last are refused, as are unknown base features.
    data = json.loads(model.to_json())
    data["features"] = list(head_feature_names(3)) + list(FEATURE_NAMES)
    with pytest.raises(ValueError):
        GuardModel.from_json(json.dumps(data))
    data["features"] = ["cosine", *head_feature_names(3)]
    with pytest.raises(ValueError):
        GuardModel.from_json(json.dumps(data))


def test_head_decides_broad_rewrites_from_the_vectors(span_similarity):
    rng = np.random.default_rng(1)
    u = unit(rng, 4)
    guard = Guard("learned", head_model(4, bias=-1.0, product_weight=4.0), 0.5)
    a, b = prompt_terms(QUERY), prompt_terms(REWRITE)

    def prob(vectors: tuple[np.ndarray, np.ndarray] | None) -> float:
        return guard.probability(0.86, a, b, span_similarity, vectors=vectors)

    # Same direction: the products sum to 1 -> accepted; opposite: rejected; no vectors: a
    # head model cannot judge, so it misses.
    assert prob((u, u)) > 0.9
    assert prob((u, -u)) < 0.01
    assert prob(None) == 0.0
    # Vetoes still come first: a changed number is rejected whatever the head says.
    assert guard.probability(0.99, prompt_terms("17 times 23"), prompt_terms("17 times 24")) == 0


def test_fit_shrinks_the_head_block_on_its_own():
    rng = np.random.default_rng(2)
    n = 400
    base = rng.standard_normal((n, len(FEATURE_NAMES)))
    head = rng.standard_normal((n, 4))
    y = (base[:, 0] + head[:, 0] + 0.3 * rng.standard_normal(n) > 0).astype(float)
    x = np.hstack([base, head])
    loose = fit_logistic(x, y, head_dim=2, head_l2=1.0)
    tight = fit_logistic(x, y, head_dim=2, head_l2=1e7)
    first_head = len(FEATURE_NAMES)
    assert abs(loose.weights[first_head]) > 1.0
    assert abs(tight.weights[first_head]) < 0.01
    # The base features keep their own (weak) shrinkage either way.
    assert tight.weights[0] > 1.0 and loose.weights[0] > 1.0


async def test_cache_hands_the_guard_both_vectors(rewrite_verdict, cache_with_weights, small_cfg):
    # The model reads only its bias here; a hit means the cache passed both vectors (a head
    # model without them answers 0).
    assert await rewrite_verdict(head_model(384, bias=6.0), QUERY, REWRITE) == "hit"
    assert await rewrite_verdict(head_model(384, bias=-6.0), QUERY, REWRITE) == "miss"
    assert build_guard(small_cfg()).model is not None
    # Head weights for another embedding size are refused when the cache is built.
    with pytest.raises(ValueError, match="8-dimensional"):
        await cache_with_weights(head_model(8, bias=0.0))
