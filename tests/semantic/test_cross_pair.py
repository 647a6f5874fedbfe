"""Cross-encoded pair features: a joint MiniLM pass over both prompts, and the guard using it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks.semantic_guard_fit import fit_logistic
from gateway.semantic.cross_encoder import LookupPairs, joint_encoder, joint_states
from policies.semantic.cross_pair import (
    CROSS_SCALAR_NAMES,
    JointStates,
    cross_feature_names,
    cross_features,
    parse_cross_names,
)
from policies.semantic.guard import Guard, GuardModel
from policies.semantic.pair_features import FEATURE_NAMES, prompt_terms

QUERY = "How do I reverse a string in Python?"
REWRITE = "python flip string backwards"
SCALARS = len(CROSS_SCALAR_NAMES)


def unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def cross_model(dim: int, bias: float, orders: int = 1) -> GuardModel:
    n = len(FEATURE_NAMES) + SCALARS + 3 * dim
    return GuardModel(
        weights=(0.0,) * n,
        bias=bias,
        mean=(0.0,) * n,
        scale=(1.0,) * n,
        uses_cross=True,
        cross_dim=dim,
        cross_orders=orders,
    )


def test_features_of_a_joint_pass():
    rng = np.random.default_rng(0)
    a, b = unit_rows(rng, 5, 8), unit_rows(rng, 3, 8)
    cls = rng.standard_normal(8)
    u, v = a.mean(axis=0), b.mean(axis=0)
    u, v = u / np.linalg.norm(u), v / np.linalg.norm(v)
    row = cross_features([JointStates(cls, a, b)], u, v, vectors=True)
    assert row.shape == (SCALARS + 3 * 8,)
    # Solo vectors equal to the pooled joint states: no drift.
    assert row[1] == pytest.approx(1.0) and row[2] == pytest.approx(1.0)
    assert row[0] == pytest.approx(float(u @ v))
    assert np.allclose(row[SCALARS : SCALARS + 8], cls)
    # The same tokens on both sides: aligned everywhere, pooled states equal.
    same = cross_features([JointStates(cls, a, a)], u, u, vectors=False)
    assert same.shape == (SCALARS,)
    assert np.allclose(same, 1.0)
    # Two orders: the row is symmetric in the two prompts.
    ab, ba = JointStates(cls, a, b), JointStates(-cls, b, a)
    assert np.allclose(cross_features([ab, ba], u, v, True), cross_features([ba, ab], v, u, True))
    # An empty side reads as the CLS state instead of raising.
    empty = cross_features([JointStates(cls, a[:0], b)], u, v, vectors=False)
    assert np.isfinite(empty).all()


def test_weights_file_round_trip():
    for dim, orders in ((4, 2), (0, 1)):
        model = cross_model(dim, bias=0.25, orders=orders)
        names = model.feature_names
        assert names == FEATURE_NAMES + cross_feature_names(dim, dim > 0)
        again = GuardModel.from_json(model.to_json())
        assert again == model
        assert parse_cross_names(names) == (dim, dim > 0, SCALARS + 3 * dim)
    data = json.loads(cross_model(4, 0.0).to_json())
    data["features"] = list(cross_feature_names(4, True)) + list(FEATURE_NAMES)
    with pytest.raises(ValueError):
        GuardModel.from_json(json.dumps(data))


def test_joint_pass_splits_the_sides_and_contextualises_them(st_model):
    a, b = "serialize a dict as json text", "parse json text into a dict"
    (joint,) = joint_states(st_model, [(a, b)])
    solo_a, solo_b = st_model.token_states([a, b])
    assert joint.a.shape == solo_a.vectors.shape and joint.b.shape == solo_b.vectors.shape
    assert joint.cls.shape == (st_model.dim,)
    # The same pieces, other states: each side saw the other one.
    ja = joint.a / np.linalg.norm(joint.a, axis=1, keepdims=True)
    agreement = np.einsum("ij,ij->i", ja, solo_a.vectors)
    assert agreement.min() < 0.99 and agreement.mean() > 0.3
    # The order matters: (b, a) is another pass, not (a, b) mirrored.
    (flipped,) = joint_states(st_model, [(b, a)])
    assert flipped.a.shape == joint.b.shape
    assert not np.allclose(flipped.a, joint.b, atol=1e-3)
    # Batched with a longer pair (padding) the states are the same as alone.
    (again, _) = joint_states(st_model, [(a, b), (a + " please " * 10, b)])
    assert np.allclose(again.a, joint.a, atol=0.05)
    assert joint_encoder(object()) is None and joint_encoder(st_model) is not None


def test_lookup_pairs_encode_every_candidate_in_one_forward():
    calls: list[list[tuple[str, str]]] = []

    def encode(pairs):  # type: ignore[no-untyped-def]
        calls.append(list(pairs))
        return [JointStates(np.zeros(2), np.ones((1, 2)), np.ones((1, 2))) for _ in pairs]

    batch = LookupPairs(encode, [("q", "x"), ("q", "y"), ("q", "z")])
    batch([("q", "y")])
    batch([("q", "x")])
    batch([("q", "z")])
    assert len(calls) == 1 and sorted(calls[0]) == [("q", "x"), ("q", "y"), ("q", "z")]
    batch([("q", "w")])  # not named in advance: its own forward
    assert calls[1] == [("q", "w")]


def test_guard_without_joint_or_vectors_misses():
    guard = Guard("learned", cross_model(4, bias=6.0), 0.5)
    a, b = prompt_terms(QUERY), prompt_terms(REWRITE)
    rng = np.random.default_rng(3)
    u, v = unit_rows(rng, 2, 4)
    joint_calls: list[object] = []

    def joint(pairs):  # type: ignore[no-untyped-def]
        joint_calls.append(pairs)
        return [JointStates(np.ones(4), unit_rows(rng, 3, 4), unit_rows(rng, 2, 4)) for _ in pairs]

    spans = lambda pairs: [0.9] * len(pairs)  # noqa: E731
    assert guard.probability(0.86, a, b, spans, vectors=(u, v)) == 0.0
    assert guard.probability(0.86, a, b, spans, joint=joint) == 0.0
    assert guard.probability(0.86, a, b, spans, vectors=(u, v), joint=joint) > 0.99
    assert joint_calls == [[(a.wording, b.wording)]]
    two = Guard("learned", cross_model(4, bias=6.0, orders=2), 0.5)
    two.probability(0.86, a, b, spans, vectors=(u, v), joint=joint)
    assert joint_calls[-1] == [(a.wording, b.wording), (b.wording, a.wording)]


def test_fit_shrinks_the_cross_vector_block_on_its_own():
    rng = np.random.default_rng(2)
    n, dim = 400, 2
    x = rng.standard_normal((n, len(FEATURE_NAMES) + SCALARS + 3 * dim))
    y = (x[:, 0] + x[:, -1] + 0.3 * rng.standard_normal(n) > 0).astype(float)
    loose = fit_logistic(x, y, head_l2=1.0, uses_cross=True, cross_dim=dim)
    tight = fit_logistic(x, y, head_l2=1e7, uses_cross=True, cross_dim=dim)
    assert abs(loose.weights[-1]) > 1.0 and abs(tight.weights[-1]) < 0.01
    assert tight.weights[0] > 1.0
    with pytest.raises(ValueError):
        fit_logistic(x, y, head_dim=1, uses_cross=True, cross_dim=dim)


async def test_cache_runs_the_joint_pass_for_a_cross_model(rewrite_verdict, cache_with_weights):
    # Only the bias counts here; a hit means the cache gave the guard both vectors and the real
    # joint pass (a cross model without them answers 0).
    assert await rewrite_verdict(cross_model(384, bias=6.0), QUERY, REWRITE) == "hit"
    assert await rewrite_verdict(cross_model(384, bias=-6.0), QUERY, REWRITE) == "miss"
    # Cross weights for another embedding size are refused when the cache is built.
    with pytest.raises(ValueError, match="8-dimensional"):
        await cache_with_weights(cross_model(8, bias=0.0))
