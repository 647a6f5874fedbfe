"""Content-word alignment (experiment behind alignment-feature guard weights, off by default)."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest

from config.semantic import SemanticCacheConfig
from gateway.semantic.cache import CachedReply, CacheQuery, build_guard
from policies.semantic.guard import Guard, GuardModel
from policies.semantic.pair_features import FEATURE_NAMES, prompt_terms
from policies.semantic.word_alignment import (
    ALIGN_FEATURE_NAMES,
    WordVectors,
    alignment_features,
)


class CountingEncoder:
    def __init__(self, model: object):
        self.model = model
        self.batches: list[list[str]] = []

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.batches.append(list(texts))
        return self.model.encode(texts, normalize_embeddings=True, show_progress_bar=False)  # type: ignore[attr-defined]


@pytest.fixture
def encoder(st_model: object) -> CountingEncoder:
    return CountingEncoder(st_model)


def query(text: str) -> CacheQuery:
    return CacheQuery(tenant="t", model="m", text=text, temperature=0.0, category_header="code")


def features(a: str, b: str, words: WordVectors) -> list[float]:
    return alignment_features(prompt_terms(a).tokens, prompt_terms(b).tokens, words)


def test_word_vectors_embed_each_word_once_in_one_batch_and_stay_bounded(encoder):
    words = WordVectors(encoder, max_words=3)
    first = words(["circle", "area", "circle"])
    assert encoder.batches == [["circle", "area"]]
    assert np.allclose(first[0], first[2])
    words(["area", "radius"])
    assert encoder.batches[-1] == ["radius"]
    words(["perimeter"])  # four distinct words seen, three kept: "circle" was least recent
    words(["circle"])
    assert encoder.batches[-1] == ["circle"]
    assert words.encoded_words == 5


def test_alignment_finds_a_key_word_without_counterpart_and_a_direction_flip(encoder):
    words = WordVectors(encoder)
    synonym = features(
        "biggest planet in the solar system", "largest planet of the solar system", words
    )
    other_noun = features("circle r=5, perimeter?", "area of a circle if the radius is five", words)
    assert synonym[0] > other_noun[0] + 0.2  # the least-matched word
    assert synonym[1] == 0.0 < other_noun[1]  # share of unmatched words
    flipped = features(
        "python comma separated string to list",
        "convert a list of strings into a single comma-separated string",
        words,
    )
    same_way = features(
        "python comma separated string to list", "split a comma separated string into a list", words
    )
    assert flipped[3] == 1.0 and same_way[3] == 0.0


def test_guard_uses_alignment_only_for_weights_that_have_it(encoder):
    # Only the order flip weighs: a flipped broad rewrite scores low, the same one without word
    # vectors reads as aligned. The shipped weights do not use alignment.
    names = FEATURE_NAMES + ALIGN_FEATURE_NAMES
    weights = tuple(-4.0 if n == "align_order_flip" else 0.0 for n in names)
    model = GuardModel(weights, 2.0, (0.0,) * len(names), (1.0,) * len(names), True)
    assert GuardModel.from_json(model.to_json()) == model
    guard = Guard("learned", model)
    a = prompt_terms("python comma separated string to list")
    b = prompt_terms("How do I convert a list of strings into a single comma-separated string")
    aligned = guard.probability(0.8, a, b, lambda pairs: [0.5] * len(pairs), WordVectors(encoder))
    neutral = guard.probability(0.8, a, b, lambda pairs: [0.5] * len(pairs), None)
    assert aligned < 0.5 < neutral
    assert not build_guard(SemanticCacheConfig()).model.uses_alignment  # type: ignore[union-attr]


async def test_cache_loads_alignment_weights_and_embeds_each_word_once(
    make_cache, small_cfg, tmp_path
):
    # Weights naming the alignment features, loaded through `guard.weights_path`: the cache
    # keeps word vectors, and a flipped broad rewrite misses while the same-way one hits.
    names = FEATURE_NAMES + ALIGN_FEATURE_NAMES
    weights = tuple(-4.0 if n == "align_order_flip" else 0.0 for n in names)
    model = GuardModel(weights, 2.0, (0.0,) * len(names), (1.0,) * len(names), True)
    path = tmp_path / "weights.json"
    path.write_text(model.to_json())
    base = small_cfg()
    cfg = msgspec.structs.replace(
        base, guard=msgspec.structs.replace(base.guard, weights_path=str(path))
    )
    cache = await make_cache(cfg)
    try:
        stored = "python comma separated string to list"
        result = await cache.lookup(query(stored))
        assert await cache.insert(result, CachedReply(text="split"))
        flipped = "How do I convert a list of strings into a single comma-separated string"
        assert (await cache.lookup(query(flipped))).status == "miss"
        assert cache._word_vectors is not None
        encoded = cache._word_vectors.encoded_words
        assert (await cache.lookup(query(flipped))).status == "miss"
        assert cache._word_vectors.encoded_words == encoded  # all words came from the LRU
        same_way = await cache.lookup(
            query("How can I turn a comma-separated string into a list in Python?")
        )
        assert same_way.status == "hit"
    finally:
        await cache.close()
