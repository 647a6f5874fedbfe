"""The workload-aware policy against LRU on the synthetic multi-category workload, where the right
answer is known: one-off batch documents never come back, chats and agent sessions do."""

from __future__ import annotations

from benchmarks.cache_sim import simulate
from benchmarks.synthetic_workload import generate
from policies.eviction.lru import LruPolicy
from policies.eviction.workload_aware import WorkloadAwarePolicy


def test_learns_to_keep_sessions_over_one_off_documents() -> None:
    reqs = generate(1500, seed=3)
    distinct = len({h for r in reqs for h in r.hash_ids})
    capacity = int(0.02 * distinct)
    lru = simulate(reqs, LruPolicy(), capacity).hit_ratio
    aware = simulate(reqs, WorkloadAwarePolicy(), capacity, gateway_signals=True).hit_ratio
    assert aware > 1.1 * lru, (aware, lru)
