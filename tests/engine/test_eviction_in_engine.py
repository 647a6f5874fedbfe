"""The workload-aware eviction policy inside the real engine (tiny model, CPU).

A conversation keeps coming back with the same 24-token history (6 blocks of 4 tokens) while,
between its turns, one-off first-turn requests flood a cache too small for both. LRU gives the
conversation's blocks up to the flood every time; the workload-aware policy learns that
continuing turns come back and one-off first turns do not, and keeps the history: the next turn
reports its whole history as `num_cached_tokens` (the worker's `usage.cached_tokens`).
"""

from __future__ import annotations

from config.eviction import EvictionConfig, LruEviction, WorkloadAwareEviction
from gpu_worker.engine_api import RequestMeta

HISTORY_TOKENS = 24
FLOOD = 8  # one-off requests between two turns: 8 x 6 blocks > the 40-block cache
ROUNDS = 12


def cached_history_per_turn(make_engine, req, run_all, prompts, eviction: EvictionConfig):
    engine = make_engine(num_blocks=40, eviction=eviction)
    history = prompts(1, seed=11, lo=HISTORY_TOKENS, hi=HISTORY_TOKENS + 1)[0]
    one_offs = iter(prompts(FLOOD * ROUNDS, seed=12, lo=24, hi=25))
    cached = []
    for rnd in range(ROUNDS):
        # the same history plus a new 2-token message: 6 full blocks reusable, the tail never
        turn = req(
            f"turn{rnd}",
            history + [5 + rnd, 7],
            max_tokens=1,
            meta=RequestMeta(category="chat", turn=rnd + 1, conversation=1),
        )
        engine.add_request(turn)
        cached.append(run_all(engine)[1][turn.request_id].num_cached_tokens)
        for i in range(FLOOD):
            rid = f"once{rnd}.{i}"
            engine.add_request(
                req(rid, next(one_offs), max_tokens=1, meta=RequestMeta(category="chat", turn=0))
            )
            run_all(engine)
    return cached


def test_workload_aware_keeps_the_reused_history_lru_loses(make_engine, req, run_all, prompts):
    lru = cached_history_per_turn(make_engine, req, run_all, prompts, LruEviction())
    # ghost_sample=1: watch every evicted key, so the 6 history blocks teach the model at once;
    # prior_weight=2: a small cache learns from few observations
    aware_cfg = WorkloadAwareEviction(ghost_sample=1, prior_weight=2.0)
    aware = cached_history_per_turn(make_engine, req, run_all, prompts, aware_cfg)
    assert lru[1:] == [0] * (ROUNDS - 1)  # the flood always pushed the history out
    # after a few rounds of learning, every turn finds its whole history cached
    assert aware[-4:] == [HISTORY_TOKENS] * 4, aware
