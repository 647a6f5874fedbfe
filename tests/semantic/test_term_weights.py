"""IDF pair features, and the optional parts of a guard weights file (IDF table, near-duplicate
model): what they compute, that they survive the JSON round trip, and how the guard uses them."""

from __future__ import annotations

from dataclasses import replace

import pytest

from policies.semantic.guard import Guard, GuardModel
from policies.semantic.pair_features import FEATURE_NAMES, prompt_terms
from policies.semantic.term_weights import (
    IDF_FEATURE_NAMES,
    fit_term_weights,
    idf_features,
)

CORPUS = [
    "how do I read a csv file in python",
    "python list comprehension with a condition",
    "sort a dictionary by value in python",
    "python virtual environment on windows",
    "what is a lambda in python",
    "bakery name ideas",
    "reverse a string in python",
    "best way to learn python fast",
]


def weights():  # type: ignore[no-untyped-def]
    return fit_term_weights(prompt_terms(p).content for p in CORPUS)


def test_rare_words_weigh_more_and_unseen_words_weigh_most():
    w = weights()
    (once,) = prompt_terms("lambda").content  # in one prompt only: left out of the table
    assert once not in w.idf and w.weight(once) == w.default
    (python,) = prompt_terms("python").content  # in six of eight
    (read,) = prompt_terms("read").content  # in one
    assert w.weight(python) < w.weight(read) == w.default
    assert w.weight("vegan") == w.default  # never seen


def test_idf_features_are_symmetric_and_zero_for_the_same_words():
    w = weights()
    a, b = prompt_terms("name ideas for my bakery"), prompt_terms("name ideas for my vegan bakery")
    assert idf_features(a, b, w) == idf_features(b, a, w)
    assert idf_features(a, prompt_terms("bakery: name ideas"), w) == [0.0, 0.0]
    share, top = idf_features(a, b, w)
    assert 0.0 < share < 1.0 and top == pytest.approx(1.0)


def test_a_rare_added_word_counts_more_than_a_common_one():
    w = weights()
    base = prompt_terms("read a csv file")
    common = idf_features(base, prompt_terms("read a csv file in python"), w)
    rare = idf_features(base, prompt_terms("read a gzipped csv file"), w)
    assert common[0] < rare[0] and common[1] < rare[1]


def near_model(w) -> GuardModel:  # type: ignore[no-untyped-def]
    """Serves a near-duplicate only when its rarest one-sided word is common (idf < 0.75 of
    an unseen word's): weight -10 on max_unique_idf, bias +7.5, other features ignored."""
    n = len(FEATURE_NAMES) + len(IDF_FEATURE_NAMES)
    weights_ = (0.0,) * (n - 1) + (-10.0,)
    return GuardModel(weights_, 7.5, (0.0,) * n, (1.0,) * n, idf=w)


def shipped_like() -> GuardModel:
    n = len(FEATURE_NAMES)
    return GuardModel((0.0,) * n, 5.0, (0.0,) * n, (1.0,) * n)


def test_weights_file_round_trip_keeps_idf_and_near_model():
    w = weights()
    model = replace(shipped_like(), idf=w, near_duplicate=near_model(w))
    model = replace(model, weights=model.weights + (0.5, -0.5))
    model = replace(model, mean=model.mean + (0.0, 0.0), scale=model.scale + (1.0, 1.0))
    again = GuardModel.from_json(model.to_json())
    assert again == model
    assert again.feature_names[len(FEATURE_NAMES) :] == IDF_FEATURE_NAMES


def test_weights_file_with_idf_names_but_no_table_is_refused():
    w = weights()
    data = near_model(w).to_dict()
    del data["idf"]
    with pytest.raises(ValueError):
        GuardModel.from_dict(data)


def test_near_duplicate_model_decides_what_the_span_rule_passes():
    w = weights()
    plain = Guard("learned", shipped_like())
    near = Guard("learned", replace(shipped_like(), near_duplicate=near_model(w)))
    csv = prompt_terms("how do I read a csv file")
    in_python = prompt_terms("how do I read a csv file in python")
    gzipped = prompt_terms("how do I read a gzipped csv file")
    # Insert-only near-duplicates: the span rule alone serves both.
    assert plain.accepts(0.9, csv, in_python) and plain.accepts(0.9, csv, gzipped)
    # The near model serves the common added word and refuses the rare one.
    assert near.accepts(0.9, csv, in_python)
    assert not near.accepts(0.9, csv, gzipped)
    # The same words in another order never reach it.
    assert near.accepts(0.9, csv, prompt_terms("csv file: how do I read a"))
