"""Eviction policy choice (a tagged union: `eviction: {type: lru}`), shared by engine and sim."""

from __future__ import annotations

from config.base import Tagged


class LruEviction(Tagged, tag="lru"):
    """Least recently released block goes first. The baseline."""


EvictionConfig = LruEviction
