"""Eviction policies by name. A new policy: one file, one line in `REGISTRY`, one config member."""

from __future__ import annotations

from collections.abc import Callable

from config.eviction import EvictionConfig, WorkloadAwareEviction
from policies.eviction.base import BlockInfo, EvictionPolicy, Key
from policies.eviction.lfu import LfuPolicy
from policies.eviction.lru import LruPolicy
from policies.eviction.workload_aware import GROWTH_UNIT_TOKENS, WorkloadAwarePolicy


def _workload_aware(cfg: EvictionConfig, block_tokens: int) -> EvictionPolicy:
    assert isinstance(cfg, WorkloadAwareEviction)
    return WorkloadAwarePolicy(cfg, block_tokens)


# The offline `BeladyPolicy` (policies/eviction/belady.py) is left out: it needs the future.
REGISTRY: dict[str, Callable[[EvictionConfig, int], EvictionPolicy]] = {
    "lru": lambda cfg, block_tokens: LruPolicy(),
    "lfu": lambda cfg, block_tokens: LfuPolicy(),
    "workload_aware": _workload_aware,
}


def build_eviction(cfg: EvictionConfig, block_tokens: int = GROWTH_UNIT_TOKENS) -> EvictionPolicy:
    """The policy `cfg` names, for a cache of `block_tokens`-token blocks."""
    tag = type(cfg).__struct_config__.tag
    return REGISTRY[str(tag)](cfg, block_tokens)


__all__ = ["REGISTRY", "BlockInfo", "EvictionPolicy", "Key", "build_eviction"]
