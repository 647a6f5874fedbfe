"""Fixtures shared across test directories."""

from __future__ import annotations

import pytest

from config.semantic import SemanticCacheConfig
from gateway.semantic.embedder import load_model


class FakeClock:
    """An injectable clock: tests move `now` instead of sleeping."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="session")
def st_model() -> object:
    """The embedding model, loaded once per test session (semantic cache and gateway tests)."""
    return load_model(SemanticCacheConfig().embedder)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
