"""Eviction policies by name. A new policy: one file, one line in `REGISTRY`, one config member."""

from __future__ import annotations

from collections.abc import Callable

from config.eviction import EvictionConfig
from policies.eviction.base import BlockInfo, EvictionPolicy, Key
from policies.eviction.lru import LruPolicy

REGISTRY: dict[str, Callable[[EvictionConfig], EvictionPolicy]] = {
    "lru": lambda cfg: LruPolicy(),
}


def build_eviction(cfg: EvictionConfig) -> EvictionPolicy:
    tag = type(cfg).__struct_config__.tag
    return REGISTRY[str(tag)](cfg)


__all__ = ["REGISTRY", "BlockInfo", "EvictionPolicy", "Key", "build_eviction"]
