"""Per-category cache counters and lookup latency, for the metrics and admin endpoints."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

LATENCY_WINDOW = 2_048  # recent lookups kept per category for the percentiles


@dataclass
class CategoryCounters:
    lookups: int = 0
    hits: int = 0
    misses: int = 0
    bypasses: int = 0
    # Verified hits (`verify: true` categories): found, then sent to a worker with the cached
    # answer as `prediction`; and the prediction tokens the workers' replies kept / dropped.
    verifies: int = 0
    accepted_prediction_tokens: int = 0
    rejected_prediction_tokens: int = 0
    evictions: int = 0
    expirations: int = 0
    entries: int = 0
    latency_s_sum: float = 0.0
    recent_latency_s: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))


class CacheStats:
    def __init__(self) -> None:
        self._by_category: dict[str, CategoryCounters] = {}

    def _get(self, category: str) -> CategoryCounters:
        counters = self._by_category.get(category)
        if counters is None:
            counters = self._by_category[category] = CategoryCounters()
        return counters

    def record(self, category: str, status: str, latency_s: float) -> None:
        c = self._get(category)
        c.lookups += 1
        if status == "hit":
            c.hits += 1
        elif status == "miss":
            c.misses += 1
        elif status == "verify":
            c.verifies += 1
        else:
            c.bypasses += 1
        c.latency_s_sum += latency_s
        c.recent_latency_s.append(latency_s)

    def hit_sent_on(self, category: str) -> None:
        """A lookup recorded as a hit went to a worker after all (the gateway could not check
        that a worker would take the request): it counts as the bypass it became."""
        c = self._get(category)
        c.hits -= 1
        c.bypasses += 1

    def count(self, category: str, name: str) -> None:
        c = self._get(category)
        setattr(c, name, getattr(c, name) + 1)

    def add_prediction(self, category: str, accepted: int, rejected: int) -> None:
        c = self._get(category)
        c.accepted_prediction_tokens += accepted
        c.rejected_prediction_tokens += rejected

    def set_entries(self, category: str, entries: int) -> None:
        self._get(category).entries = entries

    def snapshot(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for category, c in sorted(self._by_category.items()):
            recent = np.array(c.recent_latency_s) if c.recent_latency_s else np.zeros(1)
            out[category] = {
                "lookups": c.lookups,
                "hits": c.hits,
                "misses": c.misses,
                "bypasses": c.bypasses,
                "verifies": c.verifies,
                "accepted_prediction_tokens": c.accepted_prediction_tokens,
                "rejected_prediction_tokens": c.rejected_prediction_tokens,
                "evictions": c.evictions,
                "expirations": c.expirations,
                "entries": c.entries,
                "lookup_latency_s_sum": c.latency_s_sum,
                "lookup_p50_ms": float(np.percentile(recent, 50) * 1000),
                "lookup_p99_ms": float(np.percentile(recent, 99) * 1000),
            }
        return out
