"""The engine on the tiny model: greedy output is the same whatever the batching, caching,
chunking or preemption; nothing leaks."""

import pytest
import torch

from gpu_worker.engine_api import RequestMeta


def one_at_a_time(engine, reqs, run_all):
    out = {}
    for r in reqs:
        engine.add_request(r)
        out.update(run_all(engine)[0])
    return out


def test_batched_equals_one_at_a_time(make_engine, req, run_all, prompts):
    reqs = [req(str(i), p, max_tokens=10 + i) for i, p in enumerate(prompts(8, seed=1))]
    alone = one_at_a_time(make_engine(enable_prefix_caching=False), reqs, run_all)
    engine = make_engine(enable_prefix_caching=False)
    for r in reqs:
        engine.add_request(r)
    batched, last = run_all(engine)
    assert batched == alone
    assert all(len(batched[r.request_id]) == r.sampling.max_tokens for r in reqs)
    assert all(o.finish_reason == "length" and o.finished for o in last.values())
    assert len({tuple(v) for v in batched.values()}) == len(reqs)  # the outputs differ


def test_chunked_prefill_equals_whole(make_engine, req, run_all, prompts):
    reqs = [req(str(i), p) for i, p in enumerate(prompts(6, seed=2, lo=30, hi=90))]
    whole = make_engine(max_tokens_per_step=4096)
    chunked = make_engine(max_tokens_per_step=7, max_batch_size=3)
    for r in reqs:
        whole.add_request(r)
        chunked.add_request(r)
    assert run_all(chunked)[0] == run_all(whole)[0]


def test_stats_count_steps_and_prefill_steps(make_engine, req, run_all):
    engine = make_engine(max_tokens_per_step=8)
    engine.add_request(req("a", list(range(3, 23)), max_tokens=4))  # 20 prompt tokens
    run_all(engine)
    stats = engine.stats()
    # Chunks of 8, 8, 4 (the last one samples the first token), then 3 decode steps.
    assert (stats.num_steps, stats.num_prefill_steps) == (6, 3)
    assert stats.busy_s > 0


def test_prefix_caching_on_equals_off(make_engine, req, run_all, prompts):
    system = prompts(1, seed=3, lo=40, hi=41)[0]
    reqs = [req(f"r{i}", system + p) for i, p in enumerate(prompts(6, seed=4, lo=1, hi=20))]
    reqs.append(req("again", reqs[0].prompt_token_ids))  # the whole prompt is cached
    off = one_at_a_time(make_engine(enable_prefix_caching=False), reqs, run_all)
    engine = make_engine()
    on = {}
    cached = {}
    for r in reqs:
        engine.add_request(r)
        tokens, last = run_all(engine)
        on.update(tokens)
        cached[r.request_id] = last[r.request_id].num_cached_tokens
    assert on == off
    assert cached["r0"] == 0
    # later requests reuse the shared system prompt's full blocks (block size 4)
    assert all(cached[f"r{i}"] >= 40 for i in range(1, 6))
    # a repeat reuses all but the block holding its last token
    n = len(reqs[0].prompt_token_ids)
    assert cached["again"] == (n - 1) // 4 * 4


def test_preempted_equals_never_preempted(make_engine, req, run_all, prompts):
    reqs = [req(str(i), p, max_tokens=24) for i, p in enumerate(prompts(8, seed=5, lo=10, hi=30))]
    roomy = make_engine(num_blocks=256)
    for r in reqs:
        roomy.add_request(r)
    expected = run_all(roomy)[0]
    for caching in (True, False):
        tight = make_engine(num_blocks=20, enable_prefix_caching=caching)  # 80 token slots
        for r in reqs:
            tight.add_request(r)
        assert run_all(tight)[0] == expected
        assert tight.stats().num_preemptions > 0
        assert all(c == 0 for c in tight.block_manager.ref_counts())


def test_no_block_leaks_with_aborts_and_preemptions(make_engine, req, run_all, prompts, step_twice):
    engine = make_engine(num_blocks=24, max_batch_size=6, max_tokens_per_step=32)
    ps = prompts(40, seed=6, lo=3, hi=40)
    finished = set()
    for i, p in enumerate(ps):
        engine.add_request(req(str(i), p, max_tokens=5 + i % 13))
        if i % 5 == 4:
            engine.abort(str(i - 2))  # running, waiting or finished: all fine
        step_twice(engine, finished)
    _, last = run_all(engine)
    finished |= set(last)
    assert finished == {str(i) for i in range(len(ps))}
    assert engine.stats().num_preemptions > 0
    assert all(c == 0 for c in engine.block_manager.ref_counts())
    stats = engine.stats()
    assert stats.running == stats.waiting == 0
    assert stats.free_blocks + stats.cached_blocks == stats.total_blocks


def test_kv_events_track_the_cache(make_engine, req, run_all, prompts):
    engine = make_engine(num_blocks=16)
    held = set()
    for i, p in enumerate(prompts(12, seed=7, lo=20, hi=40)):
        engine.add_request(req(str(i), p, max_tokens=6))
        run_all(engine)
        stored, removed = engine.drain_kv_events()
        assert not set(stored) & set(removed)
        held = (held - set(removed)) | set(stored)
        assert held == set(engine.held_hashes())
    assert engine.stats().cached_blocks == len(held) > 0


def test_cache_salt_isolates_tenants(make_engine, req, run_all, prompts):
    engine = make_engine()
    p = prompts(1, seed=8, lo=30, hi=31)[0]
    outs = {}
    for rid, salt in (("a", "t1"), ("b", "t2"), ("c", "t1")):
        engine.add_request(req(rid, p, meta=RequestMeta(cache_salt=salt)))
        outs[rid] = run_all(engine)[1][rid].num_cached_tokens
    assert outs == {"a": 0, "b": 0, "c": 28}


def test_seeded_sampling_is_reproducible_and_batch_independent(make_engine, req, run_all, prompts):
    ps = prompts(4, seed=9)
    sampled = [
        req(str(i), p, temperature=0.9, top_p=0.9, top_k=50, seed=i) for i, p in enumerate(ps)
    ]
    alone = one_at_a_time(make_engine(), sampled, run_all)
    engine = make_engine()
    for r in sampled:
        engine.add_request(r)
    assert run_all(engine)[0] == alone
    greedy = one_at_a_time(make_engine(), [req(str(i), p) for i, p in enumerate(ps)], run_all)
    assert alone != greedy


def test_bad_requests_are_refused(make_engine, req):
    engine = make_engine(num_blocks=8)  # 32 token slots
    with pytest.raises(ValueError):
        engine.add_request(req("long", [5] * 40))
    with pytest.raises(ValueError):
        engine.add_request(req("empty", []))
    with pytest.raises(ValueError):
        engine.add_request(req("vocab", [5, 100_000]))
    engine.add_request(req("ok", [5, 6]))
    with pytest.raises(ValueError):
        engine.add_request(req("ok", [5, 6]))


def test_max_model_len_ends_with_length(make_engine, req, run_all):
    engine = make_engine(num_blocks=8)
    engine.add_request(req("x", [7] * 20, max_tokens=100))
    tokens, last = run_all(engine)
    assert len(tokens["x"]) == 12 and last["x"].finish_reason == "length"


def test_untouched_blocks_may_hold_garbage(make_engine, req, run_all, prompts):
    """The cache is zeroed lazily: NaN in never-used blocks must not reach any output."""
    reqs = [req(str(i), p, max_tokens=10) for i, p in enumerate(prompts(6, seed=9, lo=5, hi=40))]
    clean = make_engine(num_blocks=64)
    dirty = make_engine(num_blocks=64)
    for k, v in dirty.runner.kv_cache.layers:
        k[1:].fill_(float("nan"))  # block 0 (table padding) is zeroed at start
        v[1:].fill_(float("nan"))
    for engine in (clean, dirty):
        for r in reqs:
            engine.add_request(r)
    assert run_all(dirty)[0] == run_all(clean)[0]


def test_a_large_pool_touches_only_the_blocks_the_load_needs(make_engine, req, run_all, prompts):
    engine = make_engine(num_blocks=4096, max_batch_size=4)
    for i, p in enumerate(prompts(24, seed=10, lo=20, hi=40)):
        engine.add_request(req(str(i), p, max_tokens=8))
        if i % 4 == 3:
            run_all(engine)
    # 4 requests of <= 48 tokens at a time: 48 blocks, plus what the prefix cache keeps.
    bm = engine.block_manager
    assert bm.high_water <= 12 * 4 + bm.num_cached_blocks()
    assert engine.runner.kv_cache._num_zeroed == bm.high_water


def test_bfloat16_runs_and_agrees_with_float32_at_first(make_engine, req, run_all, prompts):
    ps = prompts(6, seed=3, lo=5, hi=60)
    outs = {}
    for dtype in ("float32", "bfloat16"):
        engine = make_engine(dtype=dtype, num_blocks=64)
        for i, p in enumerate(ps):
            engine.add_request(req(str(i), p, max_tokens=8))
        engine.add_request(req("sampled", ps[0], max_tokens=8, temperature=0.7, seed=1))
        outs[dtype] = run_all(engine)[0]
        assert engine.runner.kv_cache.layers[0][0].dtype == getattr(torch, dtype)
    for i in range(len(ps)):  # random tiny weights: close logits part ways after a few tokens
        assert outs["bfloat16"][str(i)][:4] == outs["float32"][str(i)][:4]
    assert len(outs["bfloat16"]["sampled"]) == 8
