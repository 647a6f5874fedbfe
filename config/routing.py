"""Routing policy choice (a tagged union: `routing: {type: least_load}`)."""

from __future__ import annotations

from config.base import Tagged


class RoundRobinRouting(Tagged, tag="round_robin"):
    """Each healthy worker in turn."""


class LeastLoadRouting(Tagged, tag="least_load"):
    """Fewest in-flight requests (gateway's count plus the worker's waiting queue)."""


RoutingConfig = RoundRobinRouting | LeastLoadRouting
