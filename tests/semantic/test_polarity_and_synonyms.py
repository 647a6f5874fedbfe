"""Session-6 experiments in the guard: polarity features for broad rewrites (polarity.py) and
serving a one-span synonym edit without the near-duplicate model
(`GuardModel.serve_span_similarity`). Prompts written for this test."""

from __future__ import annotations

import json
from dataclasses import replace

import msgspec

from benchmarks.semantic_pooled_fit import Candidate
from config.semantic import DEFAULT_CONTRAST_CHECKS
from gateway.semantic.cache import CachedReply, CacheQuery, shipped_guard_weights
from policies.semantic.guard import Guard, GuardModel, filler_edit
from policies.semantic.pair_features import edit_of, prompt_terms
from policies.semantic.polarity import POLARITY_FEATURE_NAMES, polarity_features


def feats(a: str, b: str) -> dict[str, float]:
    x, y = prompt_terms(a).tokens, prompt_terms(b).tokens
    assert polarity_features(x, y) == polarity_features(y, x)  # symmetric
    return dict(zip(POLARITY_FEATURE_NAMES, polarity_features(x, y), strict=True))


def test_polarity_features_read_the_whole_prompt() -> None:
    f = feats("sugar-free cookie recipes", "a cookie recipe with lots of sugar")
    assert f["privative_one_side"] == 1.0
    # "free" as a price is not a privative.
    assert feats("free hosting for a blog", "cheap blog hosting")["privative_one_side"] == 0.0
    # Both sides negate something, one negates what the other asserts.
    f = feats(
        "hotels that do not allow pets but have parking", "hotels that allow pets, no parking"
    )
    assert f == {"privative_one_side": 0.0, "negated_asserted": 1.0, "reversal_one_side": 0.0}
    f = feats("translate this sentence from Greek", "translate this back into Greek")
    assert f["reversal_one_side"] == 1.0
    assert feats("how to bake bread", "bread baking at home") == dict.fromkeys(
        POLARITY_FEATURE_NAMES, 0.0
    )


def _with_polarity(model: GuardModel) -> GuardModel:
    # The shipped broad model with three zero-weight polarity features added after IDF.
    return replace(
        model,
        uses_polarity=True,
        weights=model.weights + (0.0, 0.0, 0.0),
        mean=model.mean + (0.0, 0.0, 0.0),
        scale=model.scale + (1.0, 1.0, 1.0),
    )


def test_the_session_6_candidates_parse() -> None:
    cand = Candidate.parse("pooled+near+idf+reach+polarity+synonym")
    assert (cand.polarity, cand.synonym, cand.near, cand.reach) == (True, True, True, True)


def _without_serve_rules(model: GuardModel) -> GuardModel:
    return replace(model, serve_span_similarity=None, serve_filler_edits=False)


def test_polarity_and_serve_rule_round_trip_through_json() -> None:
    shipped = _without_serve_rules(GuardModel.from_json(shipped_guard_weights()))
    assert not shipped.uses_polarity and shipped.serve_span_similarity is None
    model = replace(_with_polarity(shipped), serve_span_similarity=0.9)
    again = GuardModel.from_json(model.to_json())
    assert again.uses_polarity and again.serve_span_similarity == 0.9
    assert again.feature_names[-3:] == POLARITY_FEATURE_NAMES
    assert json.loads(model.to_json())["serve_span_similarity"] == 0.9
    a, b = prompt_terms("sugar-free cookie recipes"), prompt_terms("cookie recipes with sugar")
    # Zero weights: the polarity features change nothing.
    assert Guard("learned", again).probability(0.8, a, b) == Guard("learned", shipped).probability(
        0.8, a, b
    )


def test_a_one_span_synonym_is_served_without_the_near_model_when_the_weights_say_so() -> None:
    default = GuardModel.from_json(shipped_guard_weights())
    assert default.serve_span_similarity == 0.9 and default.serve_filler_edits  # since session 6
    shipped = _without_serve_rules(default)
    assert shipped.near_duplicate is not None
    a = prompt_terms("what is the biggest desert on the planet")
    b = prompt_terms("what is the largest desert on the planet")

    def spans(similarity: float):  # type: ignore[no-untyped-def]
        return lambda pairs: [similarity] * len(pairs)

    near_only = Guard("learned", shipped).probability(0.95, a, b, spans(0.93))
    served = Guard("learned", replace(shipped, serve_span_similarity=0.9))
    assert served.probability(0.95, a, b, spans(0.93)) == 1.0
    # Below the serve bar the near model decides, as before; below the span rule, refused.
    assert served.probability(0.95, a, b, spans(0.88)) == Guard("learned", shipped).probability(
        0.95, a, b, spans(0.88)
    )
    assert served.probability(0.95, a, b, spans(0.5)) == 0.0
    # An insertion next to the swap ("biggest" -> "largest sandy") is not a one-word swap: the
    # near model decides.
    c = prompt_terms("what is the largest sandy desert on the planet")
    assert served.probability(0.95, a, c, spans(0.93)) == Guard("learned", shipped).probability(
        0.95, a, c, spans(0.93)
    )
    assert near_only < 1.0


def test_a_filler_insert_is_served_without_the_near_model_when_the_weights_say_so() -> None:
    shipped = _without_serve_rules(GuardModel.from_json(shipped_guard_weights()))
    served = Guard("learned", replace(shipped, serve_filler_edits=True))
    assert GuardModel.from_json(served.model.to_json()).serve_filler_edits  # type: ignore[union-attr]
    a = prompt_terms("how does a heat pump work")
    for b, expected in (
        ("how does a heat pump actually work", True),
        ("briefly, how does a heat pump work", True),
        ("how does a heat pump work in winter", False),  # a qualifier: the near model decides
        ("how does a small heat pump work", False),
    ):
        edit = edit_of(a, prompt_terms(b))
        assert filler_edit(a, prompt_terms(b), edit) is expected
        p = served.probability(0.95, a, prompt_terms(b), lambda pairs: [1.0] * len(pairs))
        assert (p == 1.0) is expected


# The session-5 readings: the default checks with the narrower operator and direction checks.
_NARROWER = {"operator_class": "operator", "direction_signs": "direction"}
SESSION_5_CHECKS = tuple(_NARROWER.get(c, c) for c in DEFAULT_CONTRAST_CHECKS)


def q(text: str) -> CacheQuery:
    return CacheQuery(tenant="t", model="m", text=text, temperature=0.0, category_header="code")


async def test_the_default_reads_operators_and_serves_fillers_end_to_end(
    make_cache, small_cfg, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    default = GuardModel.from_json(shipped_guard_weights())
    assert default.near_duplicate is not None
    narrow_weights = tmp_path / "narrow.json"
    narrow_weights.write_text(_without_serve_rules(default).to_json())
    base = small_cfg()
    assert "operator_class" in base.guard.contrast_checks
    narrow = msgspec.structs.replace(
        base,
        guard=msgspec.structs.replace(
            base.guard, contrast_checks=SESSION_5_CHECKS, weights_path=str(narrow_weights)
        ),
    )
    status = {}
    for name, cfg in (("narrow", narrow), ("default", base)):
        cache = await make_cache(cfg)
        try:
            for stored in ("what does == do in ruby", "how do closures work in Rust"):
                first = await cache.lookup(q(stored))
                assert await cache.insert(first, CachedReply(text=stored))
            status[name] = [
                (await cache.lookup(q(text))).status
                for text in ("what does === do in ruby", "how do closures actually work in Rust")
            ]
        finally:
            await cache.close()
    # The session-5 readings serve the other operator (same content words) and, without the
    # serve rules, the near model refuses the filler word; the default does the opposite.
    assert status == {"narrow": ["hit", "miss"], "default": ["miss", "hit"]}
