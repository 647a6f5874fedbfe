"""Routing policies by name. A new policy: one file, one line in `REGISTRY`, one config member."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from config.routing import DEFAULT_ROUTING, RoutingConfig
from policies.routing.base import RequestView, RoutingPolicy, WorkerView
from policies.routing.cache_aware import CacheAwarePolicy
from policies.routing.least_load import LeastLoadPolicy
from policies.routing.lmetric import LMetricPolicy
from policies.routing.prefix import PrefixPolicy
from policies.routing.round_robin import RoundRobinPolicy
from policies.routing.weighted import WeightedPolicy

# Each builder receives the member of `RoutingConfig` whose tag is its key.
REGISTRY: dict[str, Callable[[Any], RoutingPolicy]] = {
    "lmetric": lambda cfg: LMetricPolicy(cfg),
    "round_robin": lambda cfg: RoundRobinPolicy(),
    "least_load": lambda cfg: LeastLoadPolicy(),
    "prefix": lambda cfg: PrefixPolicy(),
    "weighted": lambda cfg: WeightedPolicy(cfg),
    "cache_aware": lambda cfg: CacheAwarePolicy(cfg),
}


def build_routing(cfg: RoutingConfig = DEFAULT_ROUTING) -> RoutingPolicy:
    tag = type(cfg).__struct_config__.tag
    return REGISTRY[str(tag)](cfg)


__all__ = [
    "DEFAULT_ROUTING",
    "REGISTRY",
    "RequestView",
    "RoutingPolicy",
    "WorkerView",
    "build_routing",
]
