"""Online estimate, per block class, of how likely a released block is to be reused within a
given time — learned from the reuse gaps actually observed, with no training and no future.

Each released block is one observation that ends either in a reuse after `age_s` (an event) or
in losing sight of the block at `age_s` (censored: it was evicted and later fell out of the ghost
list, so a reuse could no longer be seen). Ages are binned on a log scale (1 s, 2 s, 4 s, …);
per bin we keep how many observations reached it and how many ended in a reuse there — a
Kaplan-Meier estimate of the reuse-gap distribution that stays correct under censoring. Classes
with little data borrow from the all-class estimate (`prior_weight` pseudo-observations), and all
counts are halved every `half_life_obs` observations so the model follows a drifting workload.
"""

from __future__ import annotations

import math
from collections.abc import Hashable

NUM_BINS = 32  # bin b >= 1 covers ages [2^((b-1)/2), 2^(b/2)) s; the last is open (~9 h+)


def age_bin(age_s: float) -> int:
    if age_s < 1.0:
        return 0
    return min(int(2.0 * math.log2(age_s)) + 1, NUM_BINS - 1)


def bin_start_s(b: int) -> float:
    return 0.0 if b == 0 else 2.0 ** ((b - 1) / 2.0)


def bin_end_s(b: int) -> float:
    return bin_start_s(b + 1) if b + 1 < NUM_BINS else math.inf


class _Counts:
    __slots__ = ("reached", "events")

    def __init__(self) -> None:
        self.reached = [0.0] * NUM_BINS
        self.events = [0.0] * NUM_BINS

    def add(self, age_s: float, reused: bool) -> None:
        last = age_bin(age_s)
        for b in range(last + 1):
            self.reached[b] += 1.0
        if reused:
            self.events[last] += 1.0

    def halve(self) -> None:
        self.reached = [x * 0.5 for x in self.reached]
        self.events = [x * 0.5 for x in self.events]


class ReuseModel:
    """`observe` what happened to released blocks; ask `p_reuse_within(cls, horizon_s)`."""

    def __init__(self, prior_weight: float = 20.0, half_life_obs: int = 50_000) -> None:
        self.prior_weight = prior_weight
        self.half_life_obs = half_life_obs
        self._classes: dict[Hashable, _Counts] = {}
        self._all = _Counts()
        self._since_halving = 0
        self.version = 0  # bumped whenever estimates may have moved (callers cache on it)

    def observe(self, cls: Hashable, age_s: float, reused: bool) -> None:
        counts = self._classes.get(cls)
        if counts is None:
            counts = self._classes[cls] = _Counts()
        counts.add(age_s, reused)
        self._all.add(age_s, reused)
        self._since_halving += 1
        if self._since_halving >= self.half_life_obs:
            self._since_halving = 0
            self._all.halve()
            for c in self._classes.values():
                c.halve()
        self.version += 1

    def num_observations(self) -> float:
        return self._all.reached[0]

    def p_reuse_within(self, cls: Hashable | None, horizon_s: float) -> float:
        """P(a block of `cls` released now is reused within `horizon_s`); None = all classes."""
        counts = self._classes.get(cls) if cls is not None else None
        survive = 1.0
        for b in range(NUM_BINS):
            start = bin_start_s(b)
            if start >= horizon_s:
                break
            hazard = self._hazard(counts, b)
            end = bin_end_s(b)
            if horizon_s < end:  # the horizon cuts this bin: take the covered fraction
                hazard *= (horizon_s - start) / (end - start)
            survive *= 1.0 - hazard
        return 1.0 - survive

    def _hazard(self, counts: _Counts | None, b: int) -> float:
        all_reached = self._all.reached[b]
        prior = self._all.events[b] / all_reached if all_reached > 0 else 0.0
        if counts is None:
            return prior
        w = self.prior_weight
        return (counts.events[b] + w * prior) / (counts.reached[b] + w)
