"""Contextual token alignment (experiment behind token-feature guard weights, off by default)
and the runner-up margin of the cache."""

from __future__ import annotations

import msgspec
import numpy as np

from gateway.semantic.cache import CachedReply, CacheQuery
from policies.semantic.guard import Guard, GuardModel, feature_names
from policies.semantic.pair_features import prompt_terms
from policies.semantic.token_alignment import (
    TOKEN_FEATURE_NAMES,
    TokenStateCache,
    TokenStates,
    piece_weights,
    token_alignment_features,
)


def states(model: object, *texts: str) -> list[TokenStates]:
    return model.token_states([prompt_terms(t).wording for t in texts])  # type: ignore[attr-defined]


def test_token_states_are_the_pieces_without_specials_as_unit_vectors(st_model):
    (s,) = st_model.token_states(["reverse a string in pyhton"])
    assert s.pieces[:4] == ("reverse", "a", "string", "in")
    assert "[CLS]" not in s.pieces and "[SEP]" not in s.pieces
    assert s.vectors.shape == (len(s.ids), 384)
    assert np.allclose(np.linalg.norm(s.vectors, axis=1), 1.0, atol=1e-4)
    # Batched with a longer text (padding) the states stay the same.
    (short, _) = st_model.token_states(["reverse a string in pyhton", "a much longer text " * 5])
    assert short.ids == s.ids
    assert np.allclose(short.vectors, s.vectors, atol=0.05)


def test_weights_ignore_stopwords_and_punctuation_and_favour_rare_pieces(st_model):
    (s,) = st_model.token_states(["how do i reverse a string ?"])
    w = dict(zip(s.pieces, piece_weights(s), strict=True))
    assert w["how"] == w["do"] == w["a"] == w["?"] == 0.0
    assert w["reverse"] > 0 and w["string"] > 0


def test_features_are_symmetric_perfect_for_the_same_text_and_see_a_swapped_noun(st_model):
    same = token_alignment_features(*states(st_model, "area of a circle", "area of a circle"))
    assert np.allclose(same, [1.0, 1.0, 1.0], atol=1e-4)
    a, b = states(st_model, "anniversary poem for my wife", "anniversary poem for my husband")
    swapped = token_alignment_features(a, b)
    assert np.allclose(swapped, token_alignment_features(b, a))
    assert swapped[2] < 0.9 and swapped[2] < swapped[0]


def test_token_state_cache_encodes_misses_once_in_one_batch_and_stays_bounded(st_model):
    batches: list[list[str]] = []

    def encode(texts: list[str]) -> list[TokenStates]:
        batches.append(list(texts))
        return st_model.token_states(texts)

    cache = TokenStateCache(encode, max_texts=2)
    cache(["a b", "c d", "a b"])
    cache(["c d", "e f"])  # "a b" is now the least recent of three: dropped
    cache(["a b"])
    assert batches == [["a b", "c d"], ["e f"], ["a b"]]
    assert cache.encoded_texts == 4


def test_guard_reads_token_features_only_for_weights_that_have_them(st_model):
    # Only the worst-matched piece weighs: low alignment -> low probability; without token
    # states the features read as perfect.
    names = feature_names(False, True)
    weights = tuple(8.0 if n == "token_worst" else 0.0 for n in names)
    model = GuardModel(weights, -5.0, (0.0,) * len(names), (1.0,) * len(names), uses_tokens=True)
    assert GuardModel.from_json(model.to_json()) == model
    assert names[-len(TOKEN_FEATURE_NAMES) :] == TOKEN_FEATURE_NAMES
    guard = Guard("learned", model)
    a = prompt_terms("circle r=5, perimeter?")
    b = prompt_terms("area of a circle if the radius is five")
    spans = lambda pairs: [0.9] * len(pairs)  # noqa: E731
    aligned = guard.probability(0.8, a, b, spans, token_states=st_model.token_states)
    neutral = guard.probability(0.8, a, b, spans, token_states=None)
    assert aligned < 0.5 < neutral


def query(text: str) -> CacheQuery:
    return CacheQuery(tenant="t", model="m", text=text, temperature=0.0, category_header="code")


async def test_runner_up_margin_turns_an_ambiguous_hit_into_a_miss(make_cache, small_cfg):
    # Both cached prompts pass the rules guard for the query, but they ask opposite things
    # (enable / disable): within the margin the lookup is ambiguous and misses.
    async def lookup_with(margin: float | None) -> str:
        base = small_cfg()
        guard = msgspec.structs.replace(base.guard, mode="rules", runner_up_margin=margin)
        cache = await make_cache(msgspec.structs.replace(base, guard=guard))
        try:
            for text in (
                "How do I enable dark mode in VS Code?",
                "How do I disable dark mode in VS Code?",
            ):
                result = await cache.lookup(query(text))
                assert result.status == "miss"
                assert await cache.insert(result, CachedReply(text=text))
            result = await cache.lookup(query("How to turn on dark mode in VS Code?"))
            return result.status if result.reply is None else result.reply.text
        finally:
            await cache.close()

    assert await lookup_with(None) == "How do I enable dark mode in VS Code?"
    assert await lookup_with(0.01) == "How do I enable dark mode in VS Code?"
    assert await lookup_with(0.05) == "miss"
