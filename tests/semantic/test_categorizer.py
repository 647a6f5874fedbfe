"""The learned categorizer: the shipped model on prompts written for this test (none of them in
any evaluation set), its effect on a category's TTL through the real cache, and its config."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest

from config.semantic import CategorizerConfig, SemanticCacheConfig
from gateway.semantic.cache import CachedReply, CacheQuery
from policies.semantic.categorizer import CategoryModel, build_categorizer, shipped_category_model

# Labelled by hand; no rule of the default config matches any of them, so the embedding decides.
UNSEEN = [
    ("code", "how do I reverse the order of lines in a text file with awk"),
    ("code", "why does my goroutine leak when the channel is never read"),
    ("chat", "suggest a name for my new golden retriever puppy"),
    ("chat", "help me write a thank-you note to my neighbour"),
    ("factual", "who wrote the novel Middlemarch"),
    ("factual", "how tall is Mount Kilimanjaro"),
    ("math", "what is the sum of the interior angles of a hexagon"),
    ("math", "how many ways can 5 people sit around a round table"),
    ("time_sensitive", "what did the Bank of England decide on rates this morning"),
    ("time_sensitive", "are there delays on the Piccadilly line"),
    ("time_sensitive", "how much is bitcoin worth"),
]


def _categorizers(model: object) -> tuple[object, object]:
    dim = model.get_embedding_dimension()  # type: ignore[attr-defined]

    def encode(texts: list[str]) -> np.ndarray:
        return model.encode(texts, normalize_embeddings=True)  # type: ignore[attr-defined]

    cfg = CategorizerConfig()
    learned = build_categorizer(cfg, encode, dim)
    examples = build_categorizer(msgspec.structs.replace(cfg, method="examples"), encode, dim)
    return learned, examples


def test_learned_model_files_unseen_prompts_better_than_the_examples(st_model):
    learned, examples = _categorizers(st_model)
    vectors = st_model.encode([t for _, t in UNSEEN], normalize_embeddings=True)
    right = {"learned": 0, "examples": 0}
    for (label, text), vector in zip(UNSEEN, vectors, strict=True):
        assert learned.by_rules(text) is None, text  # the embedding must decide these
        right["learned"] += learned.categorize(text, vector) == label
        right["examples"] += examples.categorize(text, vector) == label
    assert right["learned"] >= len(UNSEEN) - 2, right
    assert right["learned"] > right["examples"], right


async def test_a_time_sensitive_prompt_without_rule_words_expires_in_minutes(make_cache, clock):
    """Default TTLs: time-sensitive 5 minutes, chat 6 hours. Filed by the nearest example (the
    old way) the prompt lands in chat and is still served 10 minutes later."""
    prompt = "are there delays on the Piccadilly line"
    served_after_10_min = {}
    for method in ("learned", "examples"):
        base = SemanticCacheConfig()
        cfg = msgspec.structs.replace(
            base, categorizer=msgspec.structs.replace(base.categorizer, method=method)
        )
        cache = await make_cache(cfg)
        try:
            query = CacheQuery(tenant="t", model="m", text=prompt, temperature=0.0)
            first = await cache.lookup(query)
            assert first.status == "miss"
            assert await cache.insert(first, CachedReply(text="Minor delays eastbound."))
            clock.now += 600.0
            again = await cache.lookup(query)
            served_after_10_min[method] = (first.category, again.status)
        finally:
            await cache.close()
    assert served_after_10_min == {
        "learned": ("time_sensitive", "miss"),
        "examples": ("chat", "hit"),
    }


def test_model_json_round_trip_and_shape_checks(st_model, tmp_path):
    model = shipped_category_model()
    assert sorted(model.classes) == ["chat", "code", "factual", "math", "time_sensitive"]
    again = CategoryModel.from_json(msgspec.json.encode(model.to_dict()).decode())
    vector = st_model.encode(["who wrote the novel Middlemarch"], normalize_embeddings=True)[0]
    assert np.allclose(again.probabilities(vector), model.probabilities(vector), atol=1e-4)
    with pytest.raises(ValueError, match="one row of weights"):
        CategoryModel(["a", "b"], np.zeros((3, 4)), np.zeros(2))
    small = tmp_path / "small.json"
    small.write_text(
        msgspec.json.encode(CategoryModel(["a"], np.zeros((1, 8)), np.zeros(1)).to_dict()).decode()
    )
    with pytest.raises(ValueError, match="8-dimensional"):
        build_categorizer(
            CategorizerConfig(weights_path=str(small)),
            lambda texts: np.zeros((len(texts), 384)),
            384,
        )


async def test_the_cache_ignores_a_header_naming_no_category(make_cache):
    """Library use, below the HTTP stage's 400: an unknown header never becomes a category."""
    cache = await make_cache()
    try:
        seen = set()
        for n in range(5):
            query = CacheQuery(
                tenant="t",
                model="m",
                text="who wrote the novel Middlemarch",
                temperature=0.0,
                category_header=f"made-up-{n}",
            )
            seen.add((await cache.lookup(query)).category)
        assert seen == {"factual"}
        assert set(cache.stats()["categories"]) == {"factual"}
    finally:
        await cache.close()


def test_a_blank_header_names_no_category_and_the_rules_decide():
    categorizer = build_categorizer(
        CategorizerConfig(method="examples", examples={}), lambda texts: np.zeros((0, 4)), 4
    )
    text = "what is the weather today"  # a time-sensitive rule matches
    assert categorizer.by_rules(text, "  ") == "time_sensitive"
    assert categorizer.by_rules(text, " Code ") == "code"
