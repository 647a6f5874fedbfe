"""Pure parts: replay of a stored reply, request rules, entry value, guard features."""

from __future__ import annotations

import json

from config.semantic import CategoryPolicy
from gateway.semantic.cache import CachedReply, CacheResult
from gateway.semantic.replay import cache_headers, response_body, sse_chunks
from policies.semantic.entry_value import EntryStats, least_valuable
from policies.semantic.pair_features import pair_features, prompt_terms
from policies.semantic.request_rules import bypass_reason, parse_cache_control, partition_key

REPLY = CachedReply(text="Use slicing: s[::-1] returns the reversed string in Python.")


def test_sse_replay_is_several_chunks_then_done():
    chunks = sse_chunks(REPLY, kind="chat", request_id="id1", created=1, model="m", pieces=4)
    assert chunks[-1] == b"data: [DONE]\n\n"
    bodies = [json.loads(c[len(b"data: ") :]) for c in chunks[:-1]]
    text = "".join(b["choices"][0]["delta"].get("content", "") for b in bodies if b["choices"])
    assert text == REPLY.text
    content_chunks = [b for b in bodies if b["choices"] and b["choices"][0]["delta"].get("content")]
    assert len(content_chunks) >= 3
    assert bodies[-2]["choices"][0]["finish_reason"] == "stop"
    assert bodies[-1]["usage"]["completion_tokens"] == 0


def test_body_and_headers():
    body = response_body(
        REPLY, kind="completion", request_id="x", created=2, model="m", prompt_tokens=9
    )
    assert body["choices"][0]["text"] == REPLY.text
    assert body["usage"] == {
        "prompt_tokens": 9,
        "completion_tokens": 0,
        "total_tokens": 9,
        "prompt_tokens_details": {"cached_tokens": 9},
    }
    headers = cache_headers(CacheResult("hit", "code", similarity=0.91234))
    assert headers == {"x-kvgate-cache": "hit", "x-kvgate-similarity": "0.9123"}
    assert cache_headers(CacheResult("miss", "code")) == {"x-kvgate-cache": "miss"}


def test_cache_control_and_bypass():
    assert parse_cache_control("No-Cache, max-age=0").no_cache
    assert parse_cache_control("no-store").no_store and not parse_cache_control(None).no_store
    policy = CategoryPolicy()
    assert bypass_reason(policy, 0.0, True) is None
    assert bypass_reason(policy, None, True) == "sampled"
    assert bypass_reason(CategoryPolicy(serve_sampled=True), 0.7, True) is None
    assert bypass_reason(CategoryPolicy(cacheable=False), 0.0, True) == "not_cacheable"
    assert bypass_reason(policy, 0.0, False) == "disabled"


def test_partition_key_covers_sampling_only_when_asked():
    def key(policy: CategoryPolicy, temperature: float, turns=()) -> bytes:
        return partition_key(
            tenant="t",
            model="m",
            system_prompt="",
            earlier_turns=list(turns),
            policy=policy,
            temperature=temperature,
            top_p=None,
            seed=None,
        )

    split = CategoryPolicy(serve_sampled=True, partition_sampling=True)
    shared = CategoryPolicy(serve_sampled=True, partition_sampling=False)
    assert key(split, 0.7) != key(split, 1.2)
    assert key(shared, 0.7) == key(shared, 1.2)
    assert key(split, 0.0, [("user", "a")]) != key(split, 0.0, [("user", "b")])


def test_least_valuable_prefers_old_unhit_and_expiring():
    now = 1_000.0
    candidates = [
        (1, EntryStats(created_s=0.0, expires_s=5_000.0, hits=10)),
        (2, EntryStats(created_s=0.0, expires_s=5_000.0, hits=0)),
        (3, EntryStats(created_s=990.0, expires_s=5_000.0, hits=0)),
    ]
    assert least_valuable(candidates, now) == 2
    assert least_valuable([], now) is None


def test_pair_features_flag_numbers_negation_and_antonyms():
    a = prompt_terms("How do I enable logging in Flask?")
    b = prompt_terms("How do I disable logging in Flask?")
    assert pair_features(0.95, a, b)[4] == 1.0
    c = prompt_terms("15 percent of eighty")
    d = prompt_terms("15 percent of 90")
    assert pair_features(0.95, c, d)[1] == 1.0
    assert pair_features(0.95, c, prompt_terms("fifteen percent of 80"))[1] == 0.0
    e = prompt_terms("rows where email is null")
    f = prompt_terms("rows where email is not null")
    assert pair_features(0.95, e, f)[3] == 1.0
