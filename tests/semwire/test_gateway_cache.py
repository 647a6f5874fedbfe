"""The semantic cache through the real gateway: hits skip the worker, partitions, TTL, quota,
Cache-Control, streamed replay, metrics and the admin endpoints."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from gateway.keys import METRICS, SEMANTIC
from gateway.server import RunningGateway

MODEL = "sim-sem"  # the worker's model (conftest)
ADMIN_KEY = "adm-secret"  # conftest's admin key

PY = "How do I reverse a string in Python?"
PY_PARAPHRASE = "python: how can I reverse a string?"
STORY = "Tell me a short bedtime story about a sleepy dragon."
# The sim worker emits words; stopping at the first space gives a complete ("stop") reply.
STOP = [" "]


def categories(**policy: Any) -> dict[str, Any]:
    base = {"threshold": 0.75, "ttl_s": 3_600.0, "max_entries": 100} | policy
    return {name: base for name in ("code", "chat", "factual", "time_sensitive", "math")}


def upstream_requests(gw: RunningGateway) -> float:
    """Requests the gateway sent to workers (its `kvgate_worker_requests` counter)."""
    total = 0.0
    for family in gw.app[METRICS].registry.collect():
        if family.name == "kvgate_worker_requests":
            total += sum(s.value for s in family.samples if s.name.endswith("_total"))
    return total


async def ask(
    client: openai.AsyncOpenAI,
    text: str,
    *,
    earlier: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
    **fields: Any,
) -> tuple[str, str | None, str, Any]:
    """One temperature-0 chat request (`fields` override or add request fields)."""
    messages = (earlier or []) + [{"role": "user", "content": text}]
    raw = await client.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=messages,
        extra_headers=headers or {},
        **({"max_tokens": 16, "stop": STOP, "temperature": 0} | fields),
    )
    reply = raw.parse()
    return (
        raw.headers["x-kvgate-cache"],
        raw.headers.get("x-kvgate-similarity"),
        reply.choices[0].message.content or "",
        reply,
    )


async def ask_streamed(client: openai.AsyncOpenAI, text: str, **extra: Any) -> Any:
    """The raw response of a streamed temperature-0 chat request (headers, then `.parse()`)."""
    return await client.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[{"role": "user", "content": text}],
        max_tokens=16,
        stop=STOP,
        temperature=0,
        stream=True,
        **extra,
    )


async def settle(gw: RunningGateway) -> None:
    await gw.app[SEMANTIC].drain()  # inserts run after the reply, in the background


async def test_paraphrase_hits_without_worker_and_reports_zero_usage(make_gateway, client):
    gw = await make_gateway({"categories": categories()})
    c = client(gw)
    status, _, text, _ = await ask(c, PY)
    assert status == "miss" and text
    await settle(gw)
    sent = upstream_requests(gw)
    status, similarity, hit_text, reply = await ask(c, PY_PARAPHRASE)
    assert status == "hit" and hit_text == text
    assert similarity is not None and 0.75 <= float(similarity) <= 1.0
    assert reply.usage.completion_tokens == 0
    assert upstream_requests(gw) == sent  # the worker saw no request
    # The hit's prompt_tokens is the worker's own count for that prompt, not a size guess.
    *_, direct = await ask(c, PY_PARAPHRASE, headers={"Cache-Control": "no-cache, no-store"})
    assert reply.usage.prompt_tokens == direct.usage.prompt_tokens
    assert upstream_requests(gw) == sent + 1


async def test_other_tenant_and_other_earlier_turn_miss(make_gateway, client):
    gw = await make_gateway({"categories": categories()})
    turn = [{"role": "user", "content": "I use Python 3."}, {"role": "assistant", "content": "ok"}]
    await ask(client(gw), PY, earlier=turn)
    await settle(gw)
    assert (await ask(client(gw), PY, earlier=turn))[0] == "hit"
    assert (await ask(client(gw, "sk-b"), PY, earlier=turn))[0] == "miss"
    other = [turn[0], {"role": "assistant", "content": "noted"}]
    assert (await ask(client(gw), PY, earlier=other))[0] == "miss"


async def test_chat_and_completions_do_not_share_entries(make_gateway, client):
    """A raw prompt is continued, a chat message answered: the same text on the other endpoint
    must not be served the stored reply."""
    gw = await make_gateway({"categories": categories()})
    c = client(gw)
    assert (await ask(c, PY))[0] == "miss"
    await settle(gw)

    async def complete() -> str:
        raw = await c.completions.with_raw_response.create(
            model=MODEL, prompt=PY, max_tokens=16, stop=STOP, temperature=0
        )
        return raw.headers["x-kvgate-cache"]

    assert await complete() == "miss"  # the chat entry is not a candidate
    await settle(gw)
    assert await complete() == "hit"  # completions are cached among themselves
    assert (await ask(c, PY))[0] == "hit"  # and the chat entry is still there


async def test_negated_prompt_misses(make_gateway, client):
    gw = await make_gateway({"categories": categories()})
    c = client(gw)
    await ask(c, "SQL query to select rows where a column is NULL")
    await settle(gw)
    status, *_ = await ask(c, "SQL query to select rows where a column is not NULL")
    assert status == "miss"


async def test_ttl_expiry_with_injected_clock(make_gateway, client, clock):
    gw = await make_gateway({"categories": categories(ttl_s=60.0)})
    c = client(gw)
    await ask(c, PY)
    await settle(gw)
    clock.now += 30.0
    assert (await ask(c, PY))[0] == "hit"
    clock.now += 61.0
    assert (await ask(c, PY))[0] == "miss"


async def test_quota_eviction(make_gateway, client):
    gw = await make_gateway({"categories": categories(max_entries=2)})
    c = client(gw)
    head = {"x-kvgate-category": "factual"}
    prompts = ["Who invented the telephone?", "What is the capital of Peru?", "How tall is K2?"]
    for p in prompts:
        assert (await ask(c, p, headers=head))[0] == "miss"
        await settle(gw)
    stats = gw.app[SEMANTIC].cache.stats()["categories"]["factual"]  # type: ignore[index]
    assert stats["evictions"] >= 1 and stats["entries"] == 2
    statuses = [(await ask(c, p, headers=head))[0] for p in prompts[1:]]
    assert statuses == ["hit", "hit"]


async def test_cache_control_no_store_and_no_cache(make_gateway, client):
    gw = await make_gateway({"categories": categories()})
    c = client(gw)
    assert (await ask(c, PY, headers={"Cache-Control": "no-store"}))[0] == "miss"
    await settle(gw)
    assert (await ask(c, PY))[0] == "miss"  # nothing was stored
    await settle(gw)
    status, *_ = await ask(c, PY, headers={"Cache-Control": "no-cache"})
    assert status == "bypass"  # stored, but the lookup was skipped
    assert (await ask(c, PY))[0] == "hit"


async def test_streamed_hit_replays_several_chunks(make_gateway, client):
    gw = await make_gateway({"categories": categories()})
    c = client(gw)
    stream = (await ask_streamed(c, PY)).parse()
    first = "".join([ch.choices[0].delta.content or "" async for ch in stream if ch.choices])
    assert first
    await settle(gw)
    sent = upstream_requests(gw)
    raw = await ask_streamed(c, PY_PARAPHRASE, stream_options={"include_usage": True})
    assert raw.headers["x-kvgate-cache"] == "hit"
    chunks = [ch async for ch in raw.parse()]
    content = [ch.choices[0].delta.content for ch in chunks if ch.choices]
    assert len(chunks) >= 3 and "".join(c or "" for c in content) == first
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 0
    assert upstream_requests(gw) == sent


async def test_truncated_reply_is_not_stored(make_gateway, client):
    gw = await make_gateway({"categories": categories()})
    c = client(gw)
    messages = [{"role": "user", "content": PY}]
    await c.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=3, temperature=0
    )  # "length"
    await settle(gw)
    assert (await ask(c, PY))[0] == "miss"


async def test_max_tokens_and_stop_strings_are_respected(make_gateway, client):
    gw = await make_gateway({"categories": categories()})
    c = client(gw)
    *_, first = await ask(c, PY)
    await settle(gw)
    n = first.usage.completion_tokens
    assert n >= 2
    # A stored reply longer than the request may get is no answer for it: the worker's is.
    assert (await ask(c, PY, max_tokens=n - 1))[0] == "miss"
    assert (await ask(c, PY, max_tokens=n))[0] == "hit"
    # Replies are kept per set of stop strings: a reply cut at " " answers only " ".
    assert (await ask(c, PY, stop=["\n"]))[0] == "miss"
    assert (await ask(c, PY, stop=[" ", " "]))[0] == "hit"


async def test_requests_for_more_than_a_plain_answer_are_not_answered(make_gateway, client):
    gw = await make_gateway({"categories": categories()})
    c = client(gw)
    await ask(c, PY)
    await settle(gw)
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    for fields in (
        {"tools": [tool]},
        {"response_format": {"type": "json_object"}},
        {"logprobs": True},
        {"frequency_penalty": 0.5},
    ):
        # Not from the cache: the request reaches the sim worker, which refuses such fields.
        with pytest.raises(openai.BadRequestError) as refused:
            await ask(c, PY, **fields)
        assert refused.value.body["param"] == next(iter(fields))
    for fields in ({"tools": []}, {"logprobs": False}, {"response_format": {"type": "text"}}):
        assert (await ask(c, PY, **fields))[0] == "hit", fields


async def test_token_prompt_bypasses(make_gateway, client):
    gw = await make_gateway({"categories": categories()})
    raw = await client(gw).completions.with_raw_response.create(
        model=MODEL, prompt=[1, 2, 3], max_tokens=4
    )
    assert raw.headers["x-kvgate-cache"] == "bypass"


async def test_metrics_and_admin(make_gateway, client):
    gw = await make_gateway({"categories": categories()})
    c = client(gw)
    await ask(c, PY)
    await settle(gw)
    await ask(c, PY_PARAPHRASE)
    async with httpx.AsyncClient(base_url=gw.url) as http:
        text = (await http.get("/metrics")).text
        assert 'kvgate_semantic_cache_hits_total{category="code"} 1.0' in text
        assert 'kvgate_semantic_cache_entries{category="code"} 1.0' in text
        assert (await http.get("/admin/semantic-cache")).status_code == 401
        bad = {"Authorization": "Bearer nope"}
        assert (await http.get("/admin/semantic-cache", headers=bad)).status_code == 401
        good = {"Authorization": f"Bearer {ADMIN_KEY}"}
        stats = (await http.get("/admin/semantic-cache", headers=good)).json()
        assert stats["categories"]["code"]["hits"] == 1
        r = await http.post("/admin/semantic-cache/clear", json={"tenant": "team-b"}, headers=good)
        assert r.json()["removed"] == 0
        r = await http.post("/admin/semantic-cache/clear", json={"tenant": "team-a"}, headers=good)
        assert r.json()["removed"] == 1
        r = await http.post("/admin/semantic-cache/clear", json={"category": "math"}, headers=good)
        assert r.json()["removed"] == 0
        r = await http.post("/admin/semantic-cache/clear", json=[1], headers=good)
        assert r.status_code == 400 and "error" in r.json()
    assert (await ask(c, PY))[0] == "miss"


async def test_admin_absent_without_key_and_cache_off_switch(make_gateway, client):
    gw = await make_gateway(admin_keys=[], semantic_cache={"enabled": False})
    assert SEMANTIC not in gw.app
    async with httpx.AsyncClient(base_url=gw.url) as http:
        r = await http.get("/admin/semantic-cache", headers={"Authorization": "Bearer x"})
        assert r.status_code == 404
    raw = await client(gw).chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": PY}], max_tokens=4
    )
    assert "x-kvgate-cache" not in raw.headers


async def test_sampled_request_skips_the_model_unless_a_category_serves_it(make_gateway, client):
    async def sampled(gw: RunningGateway) -> tuple[str, int]:
        embedder = gw.app[SEMANTIC].cache.embedder
        before = embedder.batched_texts
        raw = await client(gw).chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": STORY}], max_tokens=4
        )  # no temperature: OpenAI's default 1.0, a sampled request
        return raw.headers["x-kvgate-cache"], embedder.batched_texts - before

    # No category serves sampled requests: bypassed before any embedding (no rule names this
    # prompt's category, so finding it would take the model).
    assert await sampled(await make_gateway({"categories": categories()})) == ("bypass", 0)
    # Every category does: embedded and looked up.
    some = categories(serve_sampled=True)
    assert await sampled(await make_gateway({"categories": some})) == ("miss", 1)


async def test_unknown_category_header_is_refused_and_adds_no_category(make_gateway, client):
    gw = await make_gateway({"categories": categories()})
    c = client(gw)
    before = upstream_requests(gw)
    for value in ("codee", "x" * 500):
        with pytest.raises(openai.BadRequestError) as caught:
            await ask(c, PY, headers={"x-kvgate-category": value})
        error = caught.value.body
        assert error["code"] == "invalid_category", error  # type: ignore[index]
        assert error["param"] == "x-kvgate-category", error  # type: ignore[index]
        assert "code, factual" in error["message"], error  # type: ignore[index]
    assert upstream_requests(gw) == before  # refused before any worker saw it
    assert (await ask(c, PY, headers={"x-kvgate-category": "Code"}))[0] == "miss"
    stats = gw.app[SEMANTIC].cache.stats()["categories"]  # type: ignore[index]
    assert set(stats) <= {"code", "chat", "factual", "time_sensitive", "math"}, stats
