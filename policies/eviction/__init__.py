"""Eviction policies by name. A new policy: one file, one line in `REGISTRY`, one config member."""

from __future__ import annotations

from collections.abc import Callable

from config.eviction import EvictionConfig, WorkloadAwareEviction
from policies.eviction.base import BlockInfo, EvictionPolicy, Key
from policies.eviction.lfu import LfuPolicy
from policies.eviction.lru import LruPolicy
from policies.eviction.workload_aware import WorkloadAwarePolicy


def _workload_aware(cfg: EvictionConfig) -> EvictionPolicy:
    assert isinstance(cfg, WorkloadAwareEviction)
    return WorkloadAwarePolicy(cfg)


# The offline `BeladyPolicy` (policies/eviction/belady.py) is left out: it needs the future.
REGISTRY: dict[str, Callable[[EvictionConfig], EvictionPolicy]] = {
    "lru": lambda cfg: LruPolicy(),
    "lfu": lambda cfg: LfuPolicy(),
    "workload_aware": _workload_aware,
}


def build_eviction(cfg: EvictionConfig) -> EvictionPolicy:
    tag = type(cfg).__struct_config__.tag
    return REGISTRY[str(tag)](cfg)


__all__ = ["REGISTRY", "BlockInfo", "EvictionPolicy", "Key", "build_eviction"]
