"""Verified hits through the real gateway: in a `verify: true` category a hit goes to the worker
with the cached answer as `prediction`, and the client gets exactly the worker's own answer."""

from __future__ import annotations

from typing import Any

import httpx
import openai

from gateway.keys import SEMANTIC
from gateway.server import RunningGateway
from tests.verify.conftest import ADMIN_KEY, MODEL

PY = "How do I reverse a string in Python?"
PY_PARAPHRASE = "python: how can I reverse a string?"
STORY = "Tell me a short bedtime story about a sleepy dragon."
# The sim worker writes words and a ". " now and then: replies end there ("stop", storable) and
# hold several words, so a prediction is many tokens long.
ASK = {"max_tokens": 400, "stop": [". "], "temperature": 0}


def categories(verify: tuple[str, ...] = ("code", "chat", "factual", "time_sensitive", "math")):
    base = {"threshold": 0.75, "ttl_s": 3_600.0, "max_entries": 100}
    return {
        name: base | {"verify": name in verify}
        for name in ("code", "chat", "factual", "time_sensitive", "math")
    }


async def ask(
    client: openai.AsyncOpenAI, text: str, headers: dict[str, str] | None = None, **fields: Any
) -> tuple[str, str | None, str, Any]:
    raw = await client.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[{"role": "user", "content": text}],
        extra_headers=headers or {},
        **(ASK | fields),
    )
    reply = raw.parse()
    return (
        raw.headers.get("x-kvgate-cache", ""),
        raw.headers.get("x-kvgate-similarity"),
        reply.choices[0].message.content or "",
        reply,
    )


async def ask_streamed(client: openai.AsyncOpenAI, text: str) -> tuple[str, str, Any]:
    """(cache header, text, usage) of a streamed request with a usage chunk."""
    raw = await client.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[{"role": "user", "content": text}],
        stream=True,
        stream_options={"include_usage": True},
        **ASK,
    )
    text_parts, usage, chunks = [], None, 0
    async for chunk in raw.parse():
        chunks += 1
        text_parts += [c.delta.content or "" for c in chunk.choices]
        usage = chunk.usage or usage
    assert chunks > 2  # a real stream, not one blob
    return raw.headers.get("x-kvgate-cache", ""), "".join(text_parts), usage


async def settle(gw: RunningGateway) -> None:
    await gw.app[SEMANTIC].drain()  # inserts run after the reply, in the background


async def admin_stats(gw: RunningGateway) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=gw.url) as http:
        auth = {"Authorization": f"Bearer {ADMIN_KEY}"}
        return (await http.get("/admin/semantic-cache", headers=auth)).json()


async def metrics_text(gw: RunningGateway) -> str:
    async with httpx.AsyncClient(base_url=gw.url) as http:
        return (await http.get("/metrics")).text


async def test_paraphrase_reaches_worker_with_cached_answer_and_gets_its_own(
    make_gateway, client, engine
):
    gw = await make_gateway({"categories": categories()})
    plain = await make_gateway(semantic_cache={"enabled": False})
    c = client(gw)
    status, _, cached, first = await ask(c, PY)
    assert status == "miss" and first.choices[0].finish_reason == "stop" and " " in cached
    assert engine.last_prediction() is None  # a miss carries no prediction
    assert first.usage.completion_tokens_details is None
    await settle(gw)

    status, similarity, text, reply = await ask(c, PY_PARAPHRASE)
    assert status == "verify"
    assert similarity is not None and 0.75 <= float(similarity) < 1.0
    assert engine.last_prediction() == cached  # what the worker was sent
    # The client gets the model's own answer to the paraphrase: what it gets with no cache.
    *_, direct_text, direct = await ask(client(plain), PY_PARAPHRASE)
    assert text == direct_text and text != cached
    assert reply.usage.completion_tokens == direct.usage.completion_tokens > 0
    details = reply.usage.completion_tokens_details
    assert details.accepted_prediction_tokens + details.rejected_prediction_tokens == len(
        cached.encode()
    )
    await settle(gw)
    stats = (await admin_stats(gw))["categories"]["code"]
    assert (stats["hits"], stats["misses"], stats["verifies"]) == (0, 1, 1)
    assert stats["accepted_prediction_tokens"] == details.accepted_prediction_tokens
    assert stats["rejected_prediction_tokens"] == details.rejected_prediction_tokens
    # The worker's reply was stored as its own entry: the identical request again is served
    # from it (it cannot be a false hit), without the worker.
    assert stats["entries"] == 2
    sent = len(engine.received)
    status, similarity, again, reply = await ask(c, PY_PARAPHRASE)
    assert (status, again, len(engine.received)) == ("hit", text, sent)
    assert float(similarity) > 0.99
    metrics = await metrics_text(gw)
    assert 'kvgate_semantic_cache_verifies_total{category="code"} 1.0' in metrics
    assert 'kvgate_semantic_cache_hits_total{category="code"} 1.0' in metrics


async def test_an_identical_request_is_served_from_the_cache(make_gateway, client, engine):
    """In a verify category too: the same text in the same partition is the same request."""
    gw = await make_gateway({"categories": categories()})
    c = client(gw)
    *_, cached, _ = await ask(c, STORY)
    await settle(gw)
    sent = len(engine.received)
    status, _, text, reply = await ask(c, STORY)
    assert (status, text, len(engine.received)) == ("hit", cached, sent)
    assert reply.usage.completion_tokens == 0
    # Not the same text (a case change): verified.
    status, *_ = await ask(c, STORY.lower())
    assert status == "verify" and engine.last_prediction() == cached


async def test_streamed_verify_relays_the_workers_stream_and_counts_usage(
    make_gateway, client, engine
):
    gw = await make_gateway({"categories": categories()})
    plain = await make_gateway(semantic_cache={"enabled": False})
    c = client(gw)
    status, cached, _ = await ask_streamed(c, PY)
    assert status == "miss"
    await settle(gw)
    status, text, usage = await ask_streamed(c, PY_PARAPHRASE)
    assert status == "verify" and engine.last_prediction() == cached
    assert text == (await ask_streamed(client(plain), PY_PARAPHRASE))[1]
    details = usage.completion_tokens_details
    assert details.accepted_prediction_tokens + details.rejected_prediction_tokens == len(
        cached.encode()
    )
    await settle(gw)
    stats = (await admin_stats(gw))["categories"]["code"]
    assert stats["verifies"] == 1 and stats["entries"] == 2
    assert stats["accepted_prediction_tokens"] == details.accepted_prediction_tokens
    assert stats["rejected_prediction_tokens"] == details.rejected_prediction_tokens
    # A stream without a usage chunk is relayed as well; it reports no counts.
    raw = await c.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": PY.lower()}], stream=True, **ASK
    )
    assert raw.headers["x-kvgate-cache"] == "verify"
    assert "".join([c.delta.content or "" async for ch in raw.parse() for c in ch.choices])
    await settle(gw)
    after = (await admin_stats(gw))["categories"]["code"]
    assert after["verifies"] == 2
    assert after["accepted_prediction_tokens"] == stats["accepted_prediction_tokens"]


async def test_non_verify_category_still_serves_hits_without_the_worker(
    make_gateway, client, engine
):
    gw = await make_gateway({"categories": categories(verify=("code",))})
    c = client(gw)
    chat = {"x-kvgate-category": "chat"}
    *_, story, _ = await ask(c, STORY, headers=chat)
    *_, code, _ = await ask(c, PY)
    await settle(gw)
    sent = len(engine.received)
    status, _, text, reply = await ask(c, STORY, headers=chat)
    assert (status, text, len(engine.received)) == ("hit", story, sent)
    assert reply.usage.completion_tokens == 0
    status, *_ = await ask(c, PY_PARAPHRASE)
    assert (status, len(engine.received), engine.last_prediction()) == ("verify", sent + 1, code)


async def test_clients_own_prediction_is_kept(make_gateway, client, engine):
    gw = await make_gateway({"categories": categories()})
    c = client(gw)
    *_, cached, _ = await ask(c, PY)
    await settle(gw)
    own = "Use slicing: s[::-1]"
    status, _, text, reply = await ask(
        c, PY_PARAPHRASE, extra_body={"prediction": {"type": "content", "content": own}}
    )
    assert (status, engine.last_prediction()) == ("verify", own)
    assert text == (await ask(c, PY_PARAPHRASE, headers={"Cache-Control": "no-cache"}))[2]
    details = reply.usage.completion_tokens_details
    assert details.accepted_prediction_tokens + details.rejected_prediction_tokens == len(own)


async def test_no_store_is_honoured_and_no_cache_bypasses(make_gateway, client, engine):
    gw = await make_gateway({"categories": categories()})
    c = client(gw)
    *_, cached, _ = await ask(c, PY)
    await settle(gw)
    status, *_ = await ask(c, PY_PARAPHRASE, headers={"Cache-Control": "no-store"})
    assert status == "verify" and engine.last_prediction() == cached
    await settle(gw)
    stats = (await admin_stats(gw))["categories"]["code"]
    assert stats["entries"] == 1 and stats["verifies"] == 1
    assert stats["accepted_prediction_tokens"] + stats["rejected_prediction_tokens"] == len(
        cached.encode()
    )
    status, *_ = await ask(c, PY_PARAPHRASE, headers={"Cache-Control": "no-cache"})
    assert status == "bypass" and engine.last_prediction() is None


async def test_parallel_lookup_sends_again_with_the_prediction(make_gateway, client, engine):
    gw = await make_gateway({"categories": categories(), "lookup": "parallel"})
    c = client(gw)
    *_, cached, _ = await ask(c, PY)
    await settle(gw)
    status, _, text, reply = await ask(c, PY_PARAPHRASE)
    assert status == "verify"
    # The request the worker answered carried the prediction (the one sent during the lookup,
    # without it, was dropped).
    assert engine.last_prediction() == cached
    details = reply.usage.completion_tokens_details
    assert details.accepted_prediction_tokens + details.rejected_prediction_tokens == len(
        cached.encode()
    )


async def test_sampled_requests_follow_the_categorys_temperature_rule(make_gateway, client, engine):
    gw = await make_gateway({"categories": categories()})
    c = client(gw)
    await ask(c, PY)
    await settle(gw)
    status, *_ = await ask(c, PY, temperature=0.7)  # serve_sampled false: not looked up
    assert status == "bypass" and engine.last_prediction() is None


async def test_completions_endpoint_verifies_too(make_gateway, client, engine):
    gw = await make_gateway({"categories": categories()})
    c = client(gw)

    async def complete(prompt: str = PY) -> tuple[str, str, Any]:
        raw = await c.completions.with_raw_response.create(model=MODEL, prompt=prompt, **ASK)
        reply = raw.parse()
        return raw.headers["x-kvgate-cache"], reply.choices[0].text, reply.usage

    status, cached, usage = await complete()
    assert status == "miss" and usage.completion_tokens_details is None
    await settle(gw)
    status, text, usage = await complete(PY_PARAPHRASE)
    assert (status, engine.last_prediction()) == ("verify", cached)
    details = usage.completion_tokens_details
    assert details.accepted_prediction_tokens + details.rejected_prediction_tokens == len(
        cached.encode()
    )
