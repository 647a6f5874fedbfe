"""Which cache entry is least worth keeping: the victim when a quota or the index is full.

Value = expected future hits over the entry's remaining life: a hit rate estimated from its own
history ((hits + 1) / (age + warmup)) times the time it has left before its TTL. Fresh entries
get the benefit of the doubt through `warmup_s`; an entry about to expire is worth little.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EntryStats:
    created_s: float
    expires_s: float
    hits: int


def entry_value(entry: EntryStats, now: float, warmup_s: float = 60.0) -> float:
    remaining_s = max(0.0, entry.expires_s - now)
    age_s = max(0.0, now - entry.created_s)
    return (entry.hits + 1) / (age_s + warmup_s) * remaining_s


def least_valuable(candidates: list[tuple[int, EntryStats]], now: float) -> int | None:
    """The key of the least valuable candidate (ties: the first given), or None if empty."""
    best_key: int | None = None
    best_value = float("inf")
    for key, stats in candidates:
        value = entry_value(stats, now)
        if value < best_value:
            best_key, best_value = key, value
    return best_key
