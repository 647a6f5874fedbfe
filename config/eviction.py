"""Eviction policy choice (a tagged union: `eviction: {type: lru}`), shared by engine and sim.

Defaults need no tuning per workload: the workload-aware policy measures the residence time and
the reuse probabilities it needs; its knobs are ratios and switches for ablation studies.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from config.base import Tagged

Ratio = Annotated[float, msgspec.Meta(ge=0, le=1e6)]  # never negative, always finite


class LruEviction(Tagged, tag="lru"):
    """Least recently released block goes first. The baseline."""


class WorkloadAwareEviction(Tagged, tag="workload_aware"):
    """Evict the block of least learned reuse value per block-second (per turn, position, ...)."""

    learned: bool = True  # False: structure only (orphans first), else LRU order
    orphans_first: bool = True  # evict blocks whose parent block is gone before anything else
    use_turn: bool = True  # the turn number the gateway passes (0 without it)
    use_conversation: bool = False  # the conversation id: classes by its pace between turns
    # class by how many blocks the turn added (needs the conversation id; a first turn has none)
    use_growth: bool = True
    use_category: bool = False  # the request category (the gateway's categorizer, or size)
    use_position: bool = True  # the block's position bucket and whether it is the prompt's last
    # Victim: the lowest index among this many released blocks drawn at random (O(1) a victim);
    # 0 = compare only the oldest block of each class (exact when value falls with age).
    sample_size: int = 32
    tail_first: bool = True  # a chosen block's chain gives up its deepest block first
    # value counts reuse within this many mean residence times
    horizon_factor: Annotated[float, msgspec.Meta(gt=0, le=1e6)] = 1.0
    ghost_factor: Ratio = 2.0  # watch this many evicted keys per tracked block for late reuse
    ghost_sample: int = 8  # watch one evicted key in this many (by hash): a longer memory
    prior_weight: Ratio = 20.0  # pseudo-observations pulling a class toward the all-class mean
    half_life_obs: int = 50_000  # counts are halved after this many observations
    max_turn_bucket: int = 4  # turns >= this share one class
    max_position_bucket: int = 2  # position buckets: 0 = head, 1 = second, 2 = the rest
    # growth buckets by log2 of the tokens a turn added, in units of 512 tokens (the trace's
    # block; the engine and the sim worker pass their own block size): 1, 2-3, 4-7, 8+ units,
    # i.e. up to 512 tokens, ~1-2k, ~2-4k, 4k+ (a pasted document)
    max_growth_bucket: int = 3
    # a class learns only P(it ever comes back); *when* returns come is learned per position
    # group (pooled over turns etc.): one number per class instead of one per age bin
    shared_shape: bool = True


class LfuEviction(Tagged, tag="lfu"):
    """Fewest hits goes first, ties by age (a frequency baseline)."""


EvictionConfig = LruEviction | WorkloadAwareEviction | LfuEviction
