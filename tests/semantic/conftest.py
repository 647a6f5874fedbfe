"""One embedding model per test session; a fresh cache per test, with an injectable clock."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from config.semantic import CategoryPolicy, IndexConfig, SemanticCacheConfig
from gateway.semantic.cache import SemanticCache, build_semantic_cache


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
