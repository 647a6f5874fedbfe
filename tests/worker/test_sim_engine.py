"""The simulated engine alone (no server): block accounting, batching, preemption, events, cost."""

from __future__ import annotations

import random

import pytest

from config.cost_model import CostModelConfig
from config.worker import SimEngineConfig
from gpu_worker.engine_api import EngineRequest, RequestMeta, RequestOutput, SamplingParams
from gpu_worker.sim_engine import SimEngine
from policies.block_hash import block_hashes, extra_key
from policies.cost_model import step_time_s


def _engine(**cfg: object) -> tuple[SimEngine, list[float]]:
    slept: list[float] = []
    cost = cfg.pop("cost_model", CostModelConfig(time_scale=1.0))
    engine = SimEngine(
        SimEngineConfig(cost_model=cost, **cfg),  # type: ignore[arg-type]
        model_id="m",
        sleep=slept.append,
    )
    return engine, slept


def _req(rid: str, prompt: list[int], max_tokens: int = 8, **kw: object) -> EngineRequest:
    return EngineRequest(
        request_id=rid,
        prompt_token_ids=prompt,
        sampling=SamplingParams(max_tokens=max_tokens, **kw),  # type: ignore[arg-type]
    )


def _run(engine: SimEngine, held: set[int] | None = None) -> dict[str, RequestOutput]:
    """Steps until idle; returns each request's final output; replays KV events into `held`."""
    finals: dict[str, RequestOutput] = {}
    for _ in range(100_000):
        if not engine.has_work():
            break
        for out in engine.step():
            if out.finished:
                assert out.request_id not in finals, "finished twice"
                finals[out.request_id] = out
        stored, removed = engine.drain_kv_events()
        if held is not None:
            assert not set(stored) & set(removed)
            held.difference_update(removed)
            held.update(stored)
    assert not engine.has_work()
    return finals


def _assert_no_leak(engine: SimEngine) -> None:
    pool = engine._pool
    stats = engine.stats()
    assert stats.running == stats.waiting == 0
    assert pool.num_private == 0
    assert pool.num_referenced() == 0
    assert stats.free_blocks + stats.cached_blocks == stats.total_blocks
    assert engine._pool._policy.num_evictable() == stats.cached_blocks


def _prompt(rng: random.Random, n: int) -> list[int]:
    return [rng.randrange(3, 259) for _ in range(n)]


def test_many_requests_and_aborts_leak_no_block() -> None:
    rng = random.Random(7)
    engine, _ = _engine(num_blocks=24, max_batch_size=6, max_tokens_per_step=64)
    shared = _prompt(rng, 48)
    held: set[int] = set()
    added, finals = [], {}
    for i in range(120):
        prompt = (shared if rng.random() < 0.5 else []) + _prompt(rng, rng.randrange(1, 90))
        rid = f"r{i}"
        engine.add_request(_req(rid, prompt, max_tokens=rng.randrange(1, 80)))
        added.append(rid)
        for _ in range(rng.randrange(0, 4)):
            for out in engine.step():
                if out.finished:
                    finals[out.request_id] = out
            stored, removed = engine.drain_kv_events()
            held.difference_update(removed)
            held.update(stored)
        if rng.random() < 0.3:
            engine.abort(rng.choice(added))  # running, waiting, finished or twice: all safe
    finals.update(_run(engine, held))
    assert set(finals) == set(added)  # exactly one final output per request
    assert {o.finish_reason for o in finals.values()} <= {"length", "abort"}
    assert any(o.finish_reason == "abort" for o in finals.values())
    assert engine.stats().num_preemptions > 0  # the small cache forced recompute preemptions
    _assert_no_leak(engine)
    assert held == set(engine.held_hashes())  # the event replay matches the engine's cache


def test_preempted_request_still_gets_all_its_tokens() -> None:
    engine, _ = _engine(num_blocks=6, block_size=4, max_tokens_per_step=64)
    rng = random.Random(1)
    for i in range(3):
        engine.add_request(_req(f"r{i}", _prompt(rng, 5), max_tokens=9))
    finals = _run(engine)
    assert engine.stats().num_preemptions > 0
    assert all(o.num_output_tokens == 9 and o.finish_reason == "length" for o in finals.values())
    _assert_no_leak(engine)


def test_lone_sequence_that_outgrows_the_cache_finishes_with_length() -> None:
    engine, _ = _engine(num_blocks=2, block_size=4)
    engine.add_request(_req("r", [5, 6, 7], max_tokens=50))
    out = _run(engine)["r"]
    # 8 slots hold the 3 prompt tokens and 5 outputs; the 6th output needs no slot of its own.
    assert out.finish_reason == "length" and out.num_output_tokens == 6
    _assert_no_leak(engine)


def test_cached_tokens_count_full_blocks_and_hashes_match_block_hashes() -> None:
    engine, _ = _engine()
    prompt = list(range(3, 3 + 70))
    held: set[int] = set()
    engine.add_request(_req("a", prompt, max_tokens=1))
    first = _run(engine, held)["a"]
    assert first.num_cached_tokens == 0
    assert held == set(block_hashes(prompt, 16, extra_key("m")))
    engine.add_request(_req("b", prompt + [9, 9], max_tokens=1))
    assert _run(engine)["b"].num_cached_tokens == 64
    engine.add_request(_req("c", prompt[:64], max_tokens=1))  # fully cached: last token recomputed
    assert _run(engine)["c"].num_cached_tokens == 63


def test_cache_salt_changes_the_hashes() -> None:
    engine, _ = _engine()
    prompt = list(range(3, 40))
    salted = EngineRequest(
        request_id="s",
        prompt_token_ids=prompt,
        sampling=SamplingParams(max_tokens=1),
        meta=RequestMeta(cache_salt="t1"),
    )
    held: set[int] = set()
    engine.add_request(salted)
    _run(engine, held)
    assert held == set(block_hashes(prompt, 16, extra_key("m", "t1")))


def test_step_time_follows_the_cost_model_with_chunked_prefill() -> None:
    cost = CostModelConfig(time_scale=1.0)
    engine, slept = _engine(cost_model=cost, max_tokens_per_step=100)
    engine.add_request(_req("a", list(range(3, 253)), max_tokens=3))  # 250 prompt tokens
    finals = _run(engine)
    # 3 prefill chunks (100, 100, 50; the last one samples token 1) then 2 decode steps.
    assert slept == pytest.approx(
        [
            step_time_s(cost, 100, 0, 0),
            step_time_s(cost, 100, 0, 0),
            step_time_s(cost, 50, 0, 0),
            step_time_s(cost, 0, 1, 251),
            step_time_s(cost, 0, 1, 252),
        ]
    )
    assert finals["a"].num_output_tokens == 3
    stats = engine.stats()
    assert (stats.num_steps, stats.num_prefill_steps) == (5, 3)
    assert stats.busy_s == pytest.approx(sum(slept))


def test_batch_is_capped_and_decodes_share_a_step() -> None:
    engine, slept = _engine(max_batch_size=2)
    for i in range(3):
        engine.add_request(_req(f"r{i}", [3 + i] * 10, max_tokens=4))
    engine.step()
    stats = engine.stats()
    assert (stats.running, stats.waiting) == (2, 1)
    out = engine.step()  # both running sequences decode in one step
    assert sorted(o.request_id for o in out) == ["r0", "r1"]
    _run(engine)
    _assert_no_leak(engine)


def test_output_is_deterministic_and_stop_strings_cut_it() -> None:
    engine, _ = _engine()
    prompt = list(range(3, 30))
    engine.add_request(_req("a", prompt, max_tokens=80))
    engine.add_request(_req("b", prompt, max_tokens=80))
    texts: dict[str, str] = {"a": "", "b": "", "c": ""}
    for _ in range(1000):
        if not engine.has_work():
            break
        for out in engine.step():
            texts[out.request_id] += out.text_delta
    assert texts["a"] == texts["b"] and len(texts["a"]) == 80
    word = texts["a"].split()[2]
    engine.add_request(_req("c", prompt, max_tokens=80, stop=(word,)))
    final = None
    while engine.has_work():
        for out in engine.step():
            texts["c"] += out.text_delta
            final = out if out.finished else final
    assert texts["c"] == texts["a"][: texts["a"].index(word)]
    assert final is not None and final.finish_reason == "stop"
