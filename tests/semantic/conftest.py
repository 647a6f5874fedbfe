"""One embedding model per test session; a fresh cache per test, with an injectable clock."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import msgspec
import pytest

from config.semantic import CategoryPolicy, GuardConfig, IndexConfig, SemanticCacheConfig
from gateway.semantic.cache import (
    CachedReply,
    CacheQuery,
    SemanticCache,
    build_semantic_cache,
)
from policies.semantic.guard import GuardModel


def small_config(**policy: object) -> SemanticCacheConfig:
    categories = {
        name: CategoryPolicy(threshold=0.75, ttl_s=3_600.0, max_entries=100, **policy)  # type: ignore[arg-type]
        for name in ("code", "chat", "factual", "time_sensitive", "math")
    }
    return SemanticCacheConfig(
        categories=categories, index=IndexConfig(initial_capacity=4, max_entries=64)
    )


@pytest.fixture
def small_cfg() -> Callable[..., SemanticCacheConfig]:
    return small_config


@pytest.fixture
def make_cache(
    st_model: object, clock: Callable[[], float]
) -> Callable[..., AsyncIterator[SemanticCache]]:
    async def factory(cfg: SemanticCacheConfig | None = None) -> SemanticCache:
        cache = build_semantic_cache(cfg or small_config(), clock=clock, model=st_model)
        await cache.start()
        return cache

    return factory  # type: ignore[return-value]


@pytest.fixture
def cache_with_weights(
    make_cache: Callable[..., Awaitable[SemanticCache]], tmp_path: Path
) -> Callable[[GuardModel], Awaitable[SemanticCache]]:
    """`await cache_with_weights(model)`: a small cache whose guard loads `model` from a file."""
    made = 0

    async def factory(model: GuardModel) -> SemanticCache:
        nonlocal made
        made += 1
        path = tmp_path / f"weights_{made}.json"
        path.write_text(model.to_json())
        cfg = msgspec.structs.replace(small_config(), guard=GuardConfig(weights_path=str(path)))
        return await make_cache(cfg)

    return factory


@pytest.fixture
def rewrite_verdict(
    cache_with_weights: Callable[[GuardModel], Awaitable[SemanticCache]],
) -> Callable[[GuardModel, str, str], Awaitable[str]]:
    """`await rewrite_verdict(model, prompt, rewrite)`: the status of a lookup of `rewrite` after
    `prompt` was answered and stored, in a code-category cache whose guard loads `model`."""

    async def verdict(model: GuardModel, prompt: str, rewrite: str) -> str:
        cache = await cache_with_weights(model)
        try:
            first = await cache.lookup(_code_query(prompt))
            assert await cache.insert(first, CachedReply(text="use slicing: s[::-1]"))
            return (await cache.lookup(_code_query(rewrite))).status
        finally:
            await cache.close()

    return verdict


def _code_query(text: str) -> CacheQuery:
    return CacheQuery(tenant="t", model="m", text=text, temperature=0.0, category_header="code")
