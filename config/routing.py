"""Routing policy choice (a tagged union: `routing: {type: lmetric}`); `lmetric` is the default.

Every member is selectable from YAML; `DEFAULT_ROUTING` is what a config without a `routing:`
key gets. The numbers behind the defaults are in docs/routing.md and docs/benchmarks.md.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from config.base import Tagged

# Finite: an infinite weight makes every score inf or NaN, and the choice arbitrary.
NonNegative = Annotated[float, msgspec.Meta(ge=0, le=1e6)]
Fraction = Annotated[float, msgspec.Meta(ge=0, le=1)]


class RoundRobinRouting(Tagged, tag="round_robin"):
    """Each healthy worker in turn."""


class LeastLoadRouting(Tagged, tag="least_load"):
    """Fewest in-flight requests (gateway's count plus the worker's waiting queue)."""


class LMetricRouting(Tagged, tag="lmetric"):
    """Lowest `new_prefill_tokens × batch_size` wins (KV$ affinity and load in one product).

    `count_incoming`: count the request being routed in the batch size (`load + 1`), so an idle
    worker is scored by what it must recompute instead of scoring 0 whatever it must recompute.
    Settled by measurement (docs/routing.md): true keeps locality at moderate load.
    """

    count_incoming: bool = True


class PrefixRouting(Tagged, tag="prefix"):
    """Longest cached prefix wins; ties go to the least loaded, then rotate. A baseline."""


class WeightedRouting(Tagged, tag="weighted"):
    """llm-d / Dynamo style: a weighted sum of scorers in [0, 1], highest wins. A baseline.

    Scorers: prefix (matched fraction of the prompt's blocks), queue (load, min-max normalised
    across the candidates, fewer is better), kv_cache (free fraction of the worker's KV blocks).
    The default weights are llm-d's example scheduler profile (prefix 3, queue 2, kv-cache 2).
    """

    prefix_weight: NonNegative = 3.0
    queue_weight: NonNegative = 2.0
    kv_cache_weight: NonNegative = 2.0


class CacheAwareRouting(Tagged, tag="cache_aware"):
    """SGLang-router style: longest match above a threshold, unless the fleet is imbalanced.

    Imbalanced = `max_load - min_load > balance_abs_threshold` and
    `max_load > balance_rel_threshold × min_load`; then the least loaded worker wins. Otherwise the
    longest match wins when its matched fraction exceeds `cache_threshold`, and below it the
    worker with the most free KV blocks. Defaults are the SGLang router's.
    """

    cache_threshold: Fraction = 0.3
    balance_abs_threshold: Annotated[int, msgspec.Meta(ge=0)] = 64
    balance_rel_threshold: Annotated[float, msgspec.Meta(ge=1, le=1e6)] = 1.5


RoutingConfig = (
    LMetricRouting
    | RoundRobinRouting
    | LeastLoadRouting
    | PrefixRouting
    | WeightedRouting
    | CacheAwareRouting
)

DEFAULT_ROUTING: RoutingConfig = LMetricRouting()
