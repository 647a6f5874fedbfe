"""The pair bank (policies/semantic/pair_knn.py): difference directions matched against known
pairs, in the guard's model, its weights file, and the real cache (which must hand it both
prompts' vectors)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from policies.semantic.guard import Guard, GuardModel
from policies.semantic.pair_features import FEATURE_NAMES, prompt_terms
from policies.semantic.pair_knn import (
    KNN_FEATURE_NAMES,
    PairBank,
    different_share,
    unit_directions,
)

QUERY = "How do I reverse a string in Python?"
REWRITE = "python flip string backwards"


def test_share_reads_the_most_parallel_pairs_in_either_sign():
    e = np.eye(4)
    bank = unit_directions(np.array([e[0], e[0] + 0.1 * e[2], e[1], e[1] + 0.1 * e[3]]), 0 * e)
    different = np.array([True, True, False, False])
    query = unit_directions(np.array([-e[0], e[1]]), np.zeros((2, 4)))
    assert different_share(query, bank, different, 2).tolist() == [1.0, 0.0]
    assert different_share(query, bank, different, 4).tolist() == [0.5, 0.5]
    assert different_share(query, bank[:0], different[:0], 2).tolist() == [0.5, 0.5]


def bank_model(bank: PairBank) -> GuardModel:
    """Serves unless the bank says the nearest known pairs wanted different answers."""
    n = len(FEATURE_NAMES) + len(KNN_FEATURE_NAMES)
    return GuardModel(
        weights=(0.0,) * (n - 1) + (-8.0,),
        bias=4.0,
        mean=(0.0,) * n,
        scale=(1.0,) * n,
        pair_bank=bank,
    )


def real_bank(st_model: object, label: bool) -> PairBank:  # type: ignore[no-untyped-def]
    """QUERY / REWRITE's own direction labelled `label`, and an unrelated pair the opposite."""
    u, v, w, x = st_model.encode(  # type: ignore[attr-defined]
        [QUERY, REWRITE, "best pizza in naples", "capital of peru"], normalize_embeddings=True
    )
    directions = unit_directions(np.array([u, w]), np.array([v, x]))
    return PairBank(directions, np.array([label, not label]), k=1)


def test_weights_file_keeps_the_bank_and_the_guard_needs_vectors(st_model):
    model = bank_model(real_bank(st_model, True))
    assert model.needs_vectors and model.feature_names[-1] == KNN_FEATURE_NAMES[0]
    again = GuardModel.from_dict(json.loads(model.to_json()))
    assert again.feature_names == model.feature_names and again.pair_bank is not None
    assert again.pair_bank.different.tolist() == [True, False] and again.pair_bank.k == 1
    u, v = st_model.encode([QUERY, REWRITE], normalize_embeddings=True)
    a, b = prompt_terms(QUERY), prompt_terms(REWRITE)
    guard = Guard("learned", again)
    assert again.pair_bank.share(u, v) == 1.0
    assert guard.probability(0.8, a, b, lambda spans: [1.0] * len(spans), vectors=(u, v)) < 0.5
    # Without the vectors a bank model misses (the safe answer).
    assert guard.probability(0.8, a, b, lambda spans: [1.0] * len(spans)) == 0.0
    # A bank feature must come right before any cross features.
    broken = model.to_dict()
    broken["features"] = list(FEATURE_NAMES) + ["cosine"]
    with pytest.raises(ValueError):
        GuardModel.from_dict(broken)


async def test_cache_hands_the_bank_both_vectors(st_model, rewrite_verdict):
    # The same rewrite is served when its nearest known pair wanted the same answer, refused
    # when it wanted another: the cache gave the guard both prompts' vectors.
    assert await rewrite_verdict(bank_model(real_bank(st_model, False)), QUERY, REWRITE) == "hit"
    assert await rewrite_verdict(bank_model(real_bank(st_model, True)), QUERY, REWRITE) == "miss"
