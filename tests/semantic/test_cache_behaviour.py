"""Cache behaviour through the real cache code and the real embedding model."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from config.semantic import CategoryPolicy, IndexConfig, SemanticCacheConfig
from gateway.semantic.cache import CachedReply, CacheQuery


def q(text: str, **kw: object) -> CacheQuery:
    fields = {"tenant": "acme", "model": "m1", "temperature": 0.0, "category_header": "code"}
    fields.update(kw)
    return CacheQuery(text=text, **fields)  # type: ignore[arg-type]


async def store(cache, query: CacheQuery, text: str) -> None:
    result = await cache.lookup(query)
    assert result.status == "miss", result
    assert await cache.insert(result, CachedReply(text=text))


async def test_paraphrase_hits_and_reports_similarity(make_cache):
    cache = await make_cache()
    try:
        await store(cache, q("How do I reverse a string in Python?"), "s[::-1]")
        hit = await cache.lookup(q("python: how can I reverse a string?"))
        assert hit.status == "hit"
        assert hit.reply is not None and hit.reply.text == "s[::-1]"
        assert hit.similarity is not None and 0.75 <= hit.similarity <= 1.0
        stats = cache.stats()["categories"]["code"]
        assert stats["hits"] == 1 and stats["misses"] == 1 and stats["entries"] == 1
    finally:
        await cache.close()


async def test_partitions_tenant_model_system_and_earlier_turns(make_cache):
    cache = await make_cache()
    try:
        base = q("How do I reverse a string in Python?", earlier_turns=(("user", "hi"),))
        await store(cache, base, "answer")
        same = q("How do I reverse a string in Python?", earlier_turns=(("user", "hi"),))
        assert (await cache.lookup(same)).status == "hit"
        for other in (
            q(base.text, tenant="other-tenant", earlier_turns=base.earlier_turns),
            q(base.text, model="m2", earlier_turns=base.earlier_turns),
            q(base.text, system_prompt="Answer in French.", earlier_turns=base.earlier_turns),
            q(base.text, earlier_turns=(("user", "hello there"),)),
            q(base.text),
        ):
            assert (await cache.lookup(other)).status == "miss", other
    finally:
        await cache.close()


async def test_graph_search_keeps_partitions_with_and_without_its_filter(make_cache, small_cfg):
    """Through the HNSW graph (no exact scan): while one partition holds every entry the search
    runs without its membership filter; once another tenant's entries are in, with it. Each
    tenant gets its own answer either way."""
    cfg = small_cfg()
    cfg = SemanticCacheConfig(
        categories=cfg.categories,
        index=IndexConfig(initial_capacity=4, max_entries=64, exact_search_below=0),
    )
    cache = await make_cache(cfg)
    try:
        await store(cache, q("How do I reverse a string in Python?"), "acme: s[::-1]")
        hit = await cache.lookup(q("python: how can I reverse a string?"))  # one partition
        assert hit.status == "hit" and hit.reply is not None and hit.reply.text == "acme: s[::-1]"
        assert (await cache.lookup(q(hit.reply.text, tenant="beta"))).status == "miss"
        await store(cache, q("How do I reverse a string in Python?", tenant="beta"), "beta: rev")
        for tenant in ("acme", "beta"):  # two partitions: the filtered search
            found = await cache.lookup(q("python: how can I reverse a string?", tenant=tenant))
            assert found.status == "hit" and found.reply is not None
            assert found.reply.text.startswith(tenant), (tenant, found.reply.text)
        other = await cache.lookup(q("reverse a string in python", tenant="gamma"))
        assert other.status == "miss"
    finally:
        await cache.close()


async def test_ttl_expiry_uses_the_injected_clock(make_cache, clock):
    cache = await make_cache()
    try:
        await store(cache, q("capital of austria", category_header="factual"), "Vienna")
        clock.now += 3_599.0
        assert (
            await cache.lookup(q("capital of austria", category_header="factual"))
        ).status == "hit"
        clock.now += 2.0
        result = await cache.lookup(q("capital of austria", category_header="factual"))
        assert result.status == "miss"
        assert cache.stats()["categories"]["factual"]["expirations"] == 1
        assert cache.index.live == 0
    finally:
        await cache.close()


async def test_quota_evicts_least_valuable_of_that_category(make_cache, clock, small_cfg):
    cfg = small_cfg()
    cats = dict(cfg.categories)
    cats["chat"] = CategoryPolicy(threshold=0.75, ttl_s=3_600.0, max_entries=3)
    cache = await make_cache(SemanticCacheConfig(categories=cats, index=cfg.index))
    try:
        texts = [
            "write a haiku about the sea",
            "tips for a job interview",
            "tell me a joke about cats",
        ]
        for text in texts:
            await store(cache, q(text, category_header="chat"), text)
            clock.now += 10
        # The first entry earns hits: it is the valuable one and must survive.
        for _ in range(3):
            assert (await cache.lookup(q(texts[0], category_header="chat"))).status == "hit"
        await store(cache, q("a code question about rust lifetimes"), "code entry")
        await store(cache, q("recommend a board game for four", category_header="chat"), "new")
        stats = cache.stats()["categories"]
        assert stats["chat"]["entries"] == 3 and stats["chat"]["evictions"] == 1
        assert stats["code"]["entries"] == 1 and stats["code"]["evictions"] == 0
        assert (await cache.lookup(q(texts[0], category_header="chat"))).status == "hit"
    finally:
        await cache.close()


async def test_negation_and_number_near_duplicates_miss(make_cache):
    cache = await make_cache()
    try:
        await store(cache, q("SQL query to select rows where a column is NULL"), "IS NULL")
        negated = await cache.lookup(q("SQL query to select rows where a column is not NULL"))
        assert negated.status == "miss"
        await store(cache, q("What is 17 times 23?", category_header="math"), "391")
        other_number = await cache.lookup(q("What is 17 times 24?", category_header="math"))
        assert other_number.status == "miss"
    finally:
        await cache.close()


async def test_bypass_rules(make_cache):
    cache = await make_cache()
    try:
        sampled = await cache.lookup(q("reverse a string in python", temperature=0.8))
        assert (sampled.status, sampled.reason) == ("bypass", "sampled")
        assert not await cache.insert(sampled, CachedReply(text="x"))
        no_cache = await cache.lookup(q("reverse a string in python", cache_control="no-cache"))
        assert no_cache.status == "bypass"
        assert await cache.insert(no_cache, CachedReply(text="stored anyway"))
        no_store = await cache.lookup(q("sort a dict by value in python", cache_control="no-store"))
        assert no_store.status == "miss"
        assert not await cache.insert(no_store, CachedReply(text="never stored"))
        truncated = await cache.lookup(q("merge two dicts in python"))
        assert not await cache.insert(truncated, CachedReply(text="half", finish_reason="length"))
        assert cache.index.live == 1
    finally:
        await cache.close()


async def test_disabled_cache_bypasses(make_cache):
    cache = await make_cache(SemanticCacheConfig(enabled=False))
    try:
        result = await cache.lookup(q("reverse a string in python"))
        assert (result.status, result.reason) == ("bypass", "disabled")
    finally:
        await cache.close()


async def test_index_reuses_slots_and_stays_bounded(make_cache, clock, small_cfg):
    cfg = small_cfg()
    cache = await make_cache(
        SemanticCacheConfig(
            categories=cfg.categories, index=IndexConfig(initial_capacity=2, max_entries=8)
        )
    )
    try:
        for i in range(20):
            await store(
                cache, q(f"question number {i} about topic {i * 7919}", tenant=f"t{i}"), "a"
            )
            assert cache.index.live <= 8
        assert cache.index.capacity == 8 and cache.index.slots_used == 8
        assert cache.index.resizes == 2
        assert await cache.clear(tenant="t19") == 1
        assert cache.index.live == 7
        await store(cache, q("fresh question after clearing", tenant="t99"), "b")
        assert cache.index.slots_used == 8  # the cleared slot was reused
        assert await cache.clear(category="code") == 8
        assert cache.index.live == 0
    finally:
        await cache.close()


async def test_event_loop_not_blocked_while_embedding(make_cache):
    cache = await make_cache()
    lags: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        while not stop.is_set():
            started = time.perf_counter()
            await asyncio.sleep(0.002)
            lags.append(time.perf_counter() - started - 0.002)

    try:
        tick = asyncio.create_task(ticker())
        texts = [f"explain how topic number {i} works in detail please" for i in range(48)]
        results = await asyncio.gather(
            *(cache.lookup(q(t, tenant=str(i))) for i, t in enumerate(texts))
        )
        stop.set()
        await tick
        assert all(r.status == "miss" for r in results)
        assert cache.embedder.batches < len(texts)  # concurrent lookups were batched
        # Generous bound on a shared 2-core box; a blocking encode of 48 texts takes far longer.
        assert len(lags) >= 3 and float(np.max(lags)) < 0.100
    finally:
        await cache.close()
