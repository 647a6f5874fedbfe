"""The simulated engine against the cost model, step by step (no fleet, no router)."""

from __future__ import annotations

import random

import pytest

from benchmarks.sim_worker import SimRequest, SimWorker, _steps_to_reach
from config.cost_model import CostModelConfig
from policies.cost_model import decode_time_s, step_time_s
from policies.eviction import LruPolicy

COST = CostModelConfig()


def worker(capacity_blocks: int = 100, token_budget: int = 8192) -> SimWorker:
    return SimWorker(0, COST, LruPolicy(), capacity_blocks, 512, token_budget, 256)


def serve(w: SimWorker, *reqs: SimRequest) -> None:
    for r in reqs:
        w.advance(r.arrival_s)
        w.enqueue(r, w.matched_blocks(r.hash_ids))
    w.advance(float("inf"))


def test_one_request_costs_exactly_what_the_cost_model_says():
    w = worker()
    r = SimRequest(0, 1.0, 1024, 10, [1, 2])
    serve(w, r)
    assert r.first_token_s == pytest.approx(1.0 + step_time_s(COST, 1024, 0, 0))
    decode = sum(decode_time_s(COST, 1, 1025 + i) for i in range(9))
    assert r.finish_s == pytest.approx(r.first_token_s + decode)
    assert w.busy_s == pytest.approx(r.finish_s - 1.0)


def test_a_cached_prefix_is_not_prefilled_again():
    w = worker()
    a, b = SimRequest(0, 0.0, 1024, 2, [1, 2]), SimRequest(1, 5.0, 1300, 2, [1, 2, 3])
    serve(w, a, b)
    assert b.matched_blocks == 2
    assert b.first_token_s == pytest.approx(5.0 + step_time_s(COST, 1300 - 1024, 0, 0))


def test_chunked_prefill_splits_a_long_prompt_over_steps():
    w = worker(token_budget=1000)
    r = SimRequest(0, 0.0, 2500, 1, [1, 2, 3, 4, 5])
    serve(w, r)
    expected = 2 * step_time_s(COST, 1000, 0, 0) + step_time_s(COST, 500, 0, 0)
    assert r.first_token_s == pytest.approx(expected)


def test_lru_evicts_released_blocks_only_when_room_is_needed():
    w = worker(capacity_blocks=4)
    a = SimRequest(0, 0.0, 1000, 1, [1, 2])  # 1001 tokens in all: 2 blocks, none for output
    b = SimRequest(1, 1.0, 1000, 1, [3, 4])
    c = SimRequest(2, 2.0, 1000, 1, [5, 6])  # evicts a's blocks (released longest ago)
    d = SimRequest(3, 3.0, 1000, 1, [3, 4])
    serve(w, a, b, c, d)
    assert set(w.cache) == {3, 4, 5, 6}
    assert d.matched_blocks == 2


@pytest.mark.parametrize("seed", range(5))
def test_closed_form_step_count_matches_stepping(seed):
    rng = random.Random(seed)
    for _ in range(200):
        first, growth, span = rng.uniform(1e-3, 0.05), rng.uniform(0, 1e-4), rng.uniform(0, 30)
        k, elapsed = 0, 0.0
        while elapsed < span or k == 0:
            elapsed += first + growth * k
            k += 1
        assert _steps_to_reach(span, first, growth) == k
