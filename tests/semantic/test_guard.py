"""The false-hit guard: edit shape, vetoes, span similarity, and the shipped learned model."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pytest

from config.semantic import SemanticCacheConfig
from gateway.semantic.cache import CachedReply, CacheQuery, build_guard, shipped_guard_weights
from policies.semantic.guard import MAX_SPAN_PAIRS, Guard, GuardModel, span_similarity_from
from policies.semantic.pair_features import edit_of, prompt_terms


def shape(a: str, b: str):  # type: ignore[no-untyped-def]
    return edit_of(prompt_terms(a), prompt_terms(b))


def test_direction_swap_around_a_connector():
    assert shape("euro to dollar conversion rate", "dollar to euro conversion rate").direction_swap
    assert shape("Convert 30°C to Fahrenheit", "Convert 30°F to Celsius").direction_swap
    assert shape("java int to string", "java string to int").direction_swap
    # Reordering without a connector between the swapped words is a rewording, not a swap.
    assert not shape("sort a list in python", "python: sort a list").direction_swap
    assert not shape("euro to dollar rate", "euro to dollar rate today").direction_swap


def test_typos_are_folded_and_replaced_spans_reported():
    typo = shape("30 celcius to farenheit", "30 celsius to fahrenheit")
    assert typo.ratio == 1.0 and typo.replaced == ()
    swap = shape("How do I drop rows with NaN in pandas?", "How do I drop columns with NaN?")
    assert swap.replaced == (("rows", "columns"),) and swap.ops == 2
    assert 0.7 < swap.ratio < 1.0
    # A digit inside a word is not a typo: python3 / python2 stays a substitution.
    assert shape("python3 print no newline", "python2 print no newline").replaced


@pytest.fixture
def span_similarity(st_model):  # type: ignore[no-untyped-def]
    def encode(texts: list[str]) -> np.ndarray:
        return st_model.encode(texts, normalize_embeddings=True, show_progress_bar=False)

    return span_similarity_from(encode)


def test_span_similarity_tells_synonyms_from_other_things(span_similarity):
    near, far = span_similarity([("biggest", "largest"), ("python", "javascript")])
    assert near > 0.8 and far < near - 0.2


def test_span_embedding_only_when_the_model_decides(span_similarity):
    guard = build_guard(SemanticCacheConfig())
    calls: list[int] = []

    def recording(pairs: Sequence[tuple[str, str]]) -> Sequence[float]:
        calls.append(len(pairs))
        return span_similarity(pairs)

    def prob(a: str, b: str) -> float:
        return guard.probability(0.95, prompt_terms(a), prompt_terms(b), recording)

    # Vetoed (changed number, direction swap, negation in a near-duplicate): no embedding.
    assert prob("What is 17 times 23?", "What is 17 times 24?") == 0.0
    assert prob("eur to usd rate today", "usd to eur rate today") == 0.0
    assert prob("rows where email is null", "rows where email is not null") == 0.0
    # The same content words in another order: accepted, no embedding.
    assert prob("python reverse string", "reverse string python") == 1.0
    assert calls == []
    # rows / columns is a listed antonym pair: vetoed without embedding too.
    assert prob("drop rows with NaN in pandas", "drop columns with NaN in pandas") == 0.0
    assert calls == []
    prob("How do I reverse a string in Python?", "How do I reverse a string in Ruby?")
    assert calls == [1]
    long_a = "alpha red beta green gamma blue delta pink epsilon gold zeta"
    long_b = "alpha rojo beta verde gamma azul delta rosa epsilon oro zeta"
    prob(long_a, long_b)
    assert calls[-1] == MAX_SPAN_PAIRS


def test_learned_guard_scores_a_dissimilar_substitution_below_a_synonym(span_similarity):
    shipped = build_guard(SemanticCacheConfig())
    assert shipped.mode == "learned" and shipped.model is not None
    # The span rule alone (the shipped weights without their near-duplicate model).
    guard = Guard("learned", replace(shipped.model, near_duplicate=None))

    def prob(a: str, b: str, guard: Guard = guard) -> float:
        return guard.probability(0.95, prompt_terms(a), prompt_terms(b), span_similarity)

    language = prob("How do I reverse a string in Python?", "How do I reverse a string in Ruby?")
    synonym = prob("biggest planet in the solar system", "largest planet in the solar system")
    assert language < guard.min_probability <= synonym
    # Since session 6 the shipped weights' near-duplicate model decides what the span rule
    # passes, and it refuses an inserted qualifier the span rule alone serves.
    bakery = ("name ideas for my bakery", "name ideas for my vegan bakery")
    assert prob(*bakery) == 1.0
    assert prob(*bakery, guard=shipped) < shipped.min_probability


def test_rules_mode_vetoes_any_number_or_negation_difference():
    rules = Guard("rules")
    a = prompt_terms("How do I reverse a string in Python? I am not sure how")
    b = prompt_terms("whats the easiest way to reverse a string in python")
    assert rules.probability(0.9, a, b) == 0.0
    learned = build_guard(SemanticCacheConfig())
    # A broad rewrite: the negation alone does not veto in the learned mode.
    assert learned.veto(a, b, edit_of(a, b)) is False


def q(text: str, category: str = "code") -> CacheQuery:
    return CacheQuery(
        tenant="acme", model="m1", text=text, temperature=0.0, category_header=category
    )


@pytest.mark.parametrize("near_model", [False, True])
async def test_cache_misses_one_word_substitutions_and_serves_the_paraphrase(
    make_cache, cache_with_weights, near_model
):
    # Without the shipped weights' near-duplicate model the span rule alone decides.
    shipped = GuardModel.from_json(shipped_guard_weights())
    cache = await (
        make_cache() if near_model else cache_with_weights(replace(shipped, near_duplicate=None))
    )
    try:
        for text in ("How do I drop rows with NaN values in pandas?", "eur to usd rate today"):
            result = await cache.lookup(q(text))
            assert result.status == "miss"
            assert await cache.insert(result, CachedReply(text=text))
        for other in ("How do I drop columns with NaN values in pandas?", "usd to eur rate today"):
            assert (await cache.lookup(q(other))).status == "miss", other
        same = await cache.lookup(q("pandas: how do I drop rows with NaN values?"))
        assert same.status == "hit" and same.reply is not None
        assert same.reply.text.startswith("How do I drop rows")
        # A near-duplicate with a synonym swapped in passes the span rule; the shipped weights'
        # near-duplicate model refuses most one-word edits (that is where siblings hide) but
        # serves a one-word swap whose two words embed at >= 0.9 first (`serve_span_similarity`).
        # Another entity is never served.
        planet = q("What is the biggest planet in the solar system?", "factual")
        result = await cache.lookup(planet)
        assert await cache.insert(result, CachedReply(text="Jupiter"))
        synonym = await cache.lookup(q("What is the largest planet in the solar system?"))
        assert synonym.status == "hit"
        other = await cache.lookup(q("What is the biggest moon in the solar system?"))
        assert other.status == "miss"
    finally:
        await cache.close()
