"""Routing policies by name. A new policy: one file, one line in `REGISTRY`, one config member."""

from __future__ import annotations

from collections.abc import Callable

from config.routing import RoutingConfig
from policies.routing.base import RequestView, RoutingPolicy, WorkerView
from policies.routing.least_load import LeastLoadPolicy
from policies.routing.round_robin import RoundRobinPolicy

REGISTRY: dict[str, Callable[[RoutingConfig], RoutingPolicy]] = {
    "round_robin": lambda cfg: RoundRobinPolicy(),
    "least_load": lambda cfg: LeastLoadPolicy(),
}


def build_routing(cfg: RoutingConfig) -> RoutingPolicy:
    tag = type(cfg).__struct_config__.tag
    return REGISTRY[str(tag)](cfg)


__all__ = ["REGISTRY", "RequestView", "RoutingPolicy", "WorkerView", "build_routing"]
