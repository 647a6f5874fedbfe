"""Online estimate, per block class, of how likely a released block is to be reused within a
given time — learned from the reuse gaps actually observed, with no training and no future.

Each released block is one observation that ends either in a reuse after `age_s` (an event) or
in losing sight of the block at `age_s` (censored: it was evicted and later fell out of the ghost
list, so a reuse could no longer be seen). Ages are binned on a log scale (1 s, 2 s, 4 s, …);
per bin we keep how many observations reached it and how many ended in a reuse there — a
Kaplan-Meier estimate of the reuse-gap distribution that stays correct under censoring. Classes
with little data borrow from the all-class estimate (`prior_weight` pseudo-observations), and all
counts are halved every `half_life_obs` observations so the model follows a drifting workload.

Shared shape (`group` + `shared_shape`): classes in one group (e.g. one position bucket, any
turn) are assumed to share *when* their blocks come back and to differ in *whether* they do — a
mixture-cure model, hazard(a) = p·f(a) / (1 − p·F(a)) with F the group's return-time
distribution; each class then learns one number, p, instead of one per age bin, and knows its
hazard at ages the cache never lets it reach. How far to trust the shared shape is learned per
group from how much its classes stray from it (`_shape_trust`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable

import numpy as np

_BISECT_STEPS = 30  # p to within 1e-9
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

    def add(self, first: int, last: int, reused: bool) -> None:
        for b in range(first, last + 1):
            self.reached[b] += 1.0
        if reused:
            self.events[last] += 1.0

    def halve(self) -> None:
        self.reached = [x * 0.5 for x in self.reached]
        self.events = [x * 0.5 for x in self.events]


class ReuseModel:
    """`observe` what happened to released blocks; ask `p_reuse_within(cls, horizon_s)`."""

    def __init__(
        self,
        prior_weight: float = 20.0,
        half_life_obs: int = 50_000,
        group: Callable[[Hashable], Hashable] | None = None,
        shared_shape: bool = False,
    ) -> None:
        self.shared_shape = shared_shape and group is not None
        self._trust: dict[Hashable, float] = {}  # group -> pseudo-observations of its shape
        self.prior_weight = prior_weight
        self.half_life_obs = half_life_obs
        self._group = group
        self._groups: dict[Hashable, _Counts] = {}
        self._open_groups: dict[Hashable, list[float]] = {}
        # (group, version) -> (hazard per bin, share that comes back, alive at each bin start)
        self._shapes: dict[tuple[Hashable, int], tuple[np.ndarray, float, np.ndarray]] = {}
        self._classes: dict[Hashable, _Counts] = {}
        self._all = _Counts()
        self._since_halving = 0
        # at-risk counts of observations still open (blocks neither reused nor out of sight yet),
        # per class and in all; set by the owner from a sample (`set_open`), not accumulated
        self._open: dict[Hashable, list[float]] = {}
        self._open_all = [0.0] * NUM_BINS
        self.version = 0  # bumped whenever estimates may have moved (callers cache on it)

    def observe(self, cls: Hashable, age_s: float, reused: bool, counted_bins: int = 0) -> None:
        """One block's fate: reused at `age_s`, or lost from sight then (censored). When the
        block's first `counted_bins` age bins were already counted (`observe_partial`), only
        the rest is added."""
        counts = self._classes.get(cls)
        if counts is None:
            counts = self._classes[cls] = _Counts()
        last = max(age_bin(age_s), counted_bins - 1)
        counts.add(counted_bins, last, reused)
        self._all.add(counted_bins, last, reused)
        if self._group is not None:
            self._group_counts(cls).add(counted_bins, last, reused)
        if counted_bins > 0:  # already one observation: counted when `observe_partial` began it
            self.version += 1
        else:
            self._count_one()

    def _count_one(self) -> None:
        self._since_halving += 1
        if self._since_halving >= self.half_life_obs:
            self._since_halving = 0
            self._all.halve()
            for c in (*self._classes.values(), *self._groups.values()):
                c.halve()
        self.version += 1

    def observe_partial(self, cls: Hashable, age_s: float) -> int:
        """A block still watched (evicted, its key kept in view) survived the age bins before
        `age_s`'s: count them now, so open observations are not missing from the estimate (only
        finished ones would bias it towards short gaps). Returns how many bins were counted;
        pass that to the closing `observe`."""
        counted = age_bin(age_s)
        counts = self._classes.get(cls)
        if counts is None:
            counts = self._classes[cls] = _Counts()
        counts.add(0, counted - 1, False)
        self._all.add(0, counted - 1, False)
        if self._group is not None:
            self._group_counts(cls).add(0, counted - 1, False)
        self._count_one()
        return counted

    def set_open(self, per_class: dict[Hashable, list[float]]) -> None:
        """At-risk counts per age bin of the blocks still watched and not yet reused. Without
        them the estimate only sees finished observations, and the blocks reused soon finish
        first: reuse would look likelier than it is, most for the classes kept longest."""
        self._open = per_class
        self._open_all = [sum(c[b] for c in per_class.values()) for b in range(NUM_BINS)]
        self._open_groups = {}
        self._shapes.clear()  # the open counts are part of every estimate
        self._trust.clear()
        if self._group is not None:
            for cls, bins in per_class.items():
                g = self._open_groups.setdefault(self._group(cls), [0.0] * NUM_BINS)
                for b in range(NUM_BINS):
                    g[b] += bins[b]

    def _group_counts(self, cls: Hashable) -> _Counts:
        key = self._group(cls)  # type: ignore[misc]
        counts = self._groups.get(key)
        if counts is None:
            counts = self._groups[key] = _Counts()
        return counts

    def num_observations(self) -> float:
        return self._all.reached[0]

    def p_reuse_within(self, cls: Hashable | None, horizon_s: float) -> float:
        """P(a block of `cls` released now is reused within `horizon_s`); None = all classes."""
        hazards = self.hazards(cls)
        survive = 1.0
        for b in range(NUM_BINS):
            start = bin_start_s(b)
            if start >= horizon_s:
                break
            hazard = float(hazards[b])
            end = bin_end_s(b)
            if horizon_s < end:  # the horizon cuts this bin: take the covered fraction
                hazard *= (horizon_s - start) / (end - start)
            survive *= 1.0 - hazard
        return 1.0 - survive

    def reuse_rate_by_age(self, cls: Hashable | None, horizon_s: float = 0.0) -> list[float]:
        """Per age bin b: the best reuse probability per second of cache time a block of `cls`
        that reached age bin b (unused so far) can still earn, max over how long it is kept.

        Keeping a block from age a to a + tau buys P(reuse in (a, a + tau] | unused at a) hits
        for E[cache time spent in that window]; the ratio, maximised over tau, is the block's
        worth per unit of cache (a Gittins-style index). A cache that evicts the block of lowest
        index keeps the most expected hits per block-second. It falls with age once the class's
        returns are mostly behind it, so "dead" blocks sink on their own.
        """
        hazard = np.clip(self.hazards(cls), 0.0, 0.999)
        width = np.array([bin_end_s(b) - bin_start_s(b) for b in range(NUM_BINS - 1)] + [0.0])
        width[-1] = width[-2] * math.sqrt(2.0)  # the open last bin: one more half-octave
        log_surv = np.concatenate(([0.0], np.cumsum(np.log1p(-hazard))))  # [i]: alive at bin i
        surv = np.exp(log_surv)
        # time spent in bin i if alive at its start: all of it, or about half when reused there
        occupancy = np.concatenate(([0.0], np.cumsum(width * (1.0 - hazard / 2.0) * surv[:-1])))
        # ratio[b, j] = P(reuse in bins b..j) / cache time in bins b..j, both given alive at b
        gained = surv[:-1, None] - surv[None, 1:]
        spent = occupancy[None, 1:] - occupancy[:-1, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(np.triu(np.ones((NUM_BINS, NUM_BINS), bool)), gained / spent, 0.0)
        ratio = np.nan_to_num(ratio)
        if horizon_s > 0:
            ends = [age_bin(bin_start_s(b) + horizon_s) for b in range(NUM_BINS)]
            return [float(ratio[b, j]) for b, j in enumerate(ends)]
        return [float(x) for x in ratio.max(axis=1)]

    def hazards(self, cls: Hashable | None) -> np.ndarray:
        """Per age bin, P(reused in the bin | not reused before it) for a block of `cls`."""
        counts = self._classes.get(cls) if cls is not None else None
        if self.shared_shape and counts is not None:
            cure = self._cure_hazards(cls, counts)
            w = self._shape_trust(cls)
            if math.isinf(w):
                return cure
            reached, events = self._class_counts(cls, counts)
            return (events + w * cure) / (reached + w)
        return np.array([self._hazard(counts, b, cls) for b in range(NUM_BINS)])

    def _group_shape(self, cls: Hashable) -> tuple[np.ndarray, float, np.ndarray]:
        """The group's hazard per bin and its share of blocks that come back, cached until the
        counts move (tables of a group's classes are often built back to back)."""
        key = (self._group(cls), self.version)  # type: ignore[misc]
        cached = self._shapes.get(key)
        if cached is None:
            if len(self._shapes) > 64:
                self._shapes.clear()
            shape = np.clip([self._prior(b, cls) for b in range(NUM_BINS)], 0.0, 0.999)
            alive = np.exp(np.concatenate(([0.0], np.cumsum(np.log1p(-shape)))))
            cached = self._shapes[key] = (shape, float(1.0 - alive[-1]), alive)
        return cached[0], cached[1], cached[2]

    def _class_counts(self, cls: Hashable, counts: _Counts) -> tuple[np.ndarray, np.ndarray]:
        open_counts = self._open.get(cls)
        reached = np.asarray(counts.reached) + (open_counts if open_counts is not None else 0.0)
        return reached, np.asarray(counts.events)

    def _shape_trust(self, cls: Hashable) -> float:
        """How many pseudo-observations the shared-shape prediction is worth in each age bin of
        a class of `cls`'s group, learned from how far the group's classes stray from it
        (a method-of-moments empirical-Bayes estimate, cached until the next `set_open`). If
        the events of each (class, bin) scatter around the prediction no more than binomial
        noise, the classes do share the shape: infinite trust. The more they stray, the more
        each class's own per-bin counts decide."""
        key = self._group(cls)  # type: ignore[misc]
        trust = self._trust.get(key)
        if trust is not None:
            return trust
        signal = excess = 0.0
        for other, counts in self._classes.items():
            if self._group(other) != key:  # type: ignore[misc]
                continue
            reached, events = self._class_counts(other, counts)
            h = self._cure_hazards(other, counts)
            noise = reached * h * (1.0 - h)
            signal += float((noise * np.maximum(reached - 1.0, 0.0)).sum())
            excess += float(((events - reached * h) ** 2 - noise).sum())
        # E[(O - nh)^2] = nh(1-h) (1 + (n-1)/(w+1)) when the class's hazard is Beta around h
        # with w + 1 pseudo-observations: solve for w over the group.
        trust = math.inf if excess <= 0.0 else max(signal / excess - 1.0, 0.0)
        self._trust[key] = trust
        return trust

    def _cure_hazards(self, cls: Hashable, counts: _Counts) -> np.ndarray:
        shape, ever, alive = self._group_shape(cls)
        if ever <= 1e-9:
            return shape
        cdf = (1.0 - alive) / ever  # when a returning block returns, at each bin's start
        reached, events = self._class_counts(cls, counts)
        censored = np.clip(reached - np.append(reached[1:], 0.0) - events, 0.0, None)
        cdf_mid = (cdf[:-1] + cdf[1:]) / 2.0
        num_events, total = events.sum(), events.sum() + censored.sum()
        w = self.prior_weight

        def update(p: float) -> float:  # one EM step: censored blocks, weighted by P(returning)
            returning = p * (1.0 - cdf_mid) / np.maximum(1.0 - p * cdf_mid, 1e-12)
            return (num_events + float((censored * returning).sum()) + w * ever) / (total + w)

        # The maximum-likelihood p is the fixed point of the EM step; EM itself crawls when most
        # blocks are censored young (little information each), so bisect: update(p) - p falls
        # from >= 0 at p = 0 to <= 0 at p = 1.
        low, high = 0.0, 1.0
        for _ in range(_BISECT_STEPS):
            mid = (low + high) / 2.0
            if update(mid) > mid:
                low = mid
            else:
                high = mid
        p = (low + high) / 2.0
        p = min(p, 0.999)
        hazard = p * (cdf[1:] - cdf[:-1]) / np.maximum(1.0 - p * cdf[:-1], 1e-12)
        return np.clip(hazard, 0.0, 0.999)

    def _prior(self, b: int, cls: Hashable | None) -> float:
        all_reached = self._all.reached[b] + self._open_all[b]
        prior = self._all.events[b] / all_reached if all_reached > 0 else 0.0
        if self._group is not None and cls is not None:
            key = self._group(cls)
            g = self._groups.get(key)
            if g is not None:
                g_open = self._open_groups.get(key)
                g_reached = g.reached[b] + (g_open[b] if g_open is not None else 0.0)
                prior = (g.events[b] + self.prior_weight * prior) / (g_reached + self.prior_weight)
        return prior

    def _hazard(self, counts: _Counts | None, b: int, cls: Hashable | None = None) -> float:
        prior = self._prior(b, cls)
        w = self.prior_weight
        if counts is None:
            return prior
        open_counts = self._open.get(cls)
        reached = counts.reached[b] + (open_counts[b] if open_counts is not None else 0.0)
        if reached + w <= 0:
            return prior
        return (counts.events[b] + w * prior) / (reached + w)
