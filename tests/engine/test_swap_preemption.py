"""Preemption by swapping to host memory (tiny model, on the test device; on CUDA the swap space is
pinned and the copies non_blocking): same output as never preempted, no leaked device or host
blocks, recompute when the swap space is full, only blocks gone from the cache copied back."""

import pytest

from gpu_worker.preemption import HostBlockPool, PreemptionCost


def _reqs(req, prompts, n=8, seed=5, max_tokens=24, **sampling):
    ps = prompts(n, seed=seed, lo=10, hi=30)
    return [req(str(i), p, max_tokens=max_tokens, **sampling) for i, p in enumerate(ps)]


def _expected(make_engine, run_all, reqs):
    roomy = make_engine(num_blocks=256)
    for r in reqs:
        roomy.add_request(r)
    return run_all(roomy)[0]


def _host_free(engine) -> int:
    return engine.scheduler.host_pool.num_free()


def _check_swap_space(engine) -> None:
    """The swap space is pinned exactly when the cache is on CUDA (asynchronous copies)."""
    host = engine.runner.host_cache
    on_cuda = engine.device.type == "cuda"
    assert host is not None and host.pinned == on_cuda
    assert host.data.device.type == "cpu" and (not on_cuda or host.data.is_pinned())


@pytest.mark.parametrize("caching", [True, False])
def test_swapped_equals_never_preempted(make_engine, req, run_all, prompts, caching):
    reqs = _reqs(req, prompts)
    expected = _expected(make_engine, run_all, reqs)
    tight = make_engine(
        num_blocks=20, enable_prefix_caching=caching, preemption="swap", num_swap_blocks=64
    )
    _check_swap_space(tight)
    for r in reqs:
        tight.add_request(r)
    assert run_all(tight)[0] == expected
    assert tight.scheduler.num_swap_outs > 0
    assert tight.scheduler.num_swap_outs == tight.stats().num_preemptions  # never recomputed
    assert all(c == 0 for c in tight.block_manager.ref_counts())
    assert _host_free(tight) == 64


def test_seeded_sampling_survives_swaps(make_engine, req, run_all, prompts):
    ps = prompts(8, seed=5, lo=10, hi=30)
    reqs = [
        req(str(i), p, max_tokens=24, temperature=0.8, top_p=0.9, seed=100 + i)
        for i, p in enumerate(ps)
    ]
    expected = _expected(make_engine, run_all, reqs)
    tight = make_engine(num_blocks=20, preemption="swap", num_swap_blocks=64)
    for r in reqs:
        tight.add_request(r)
    assert run_all(tight)[0] == expected
    assert tight.scheduler.num_swap_outs > 0


def test_full_swap_space_falls_back_to_recompute(make_engine, req, run_all, prompts):
    reqs = _reqs(req, prompts)
    expected = _expected(make_engine, run_all, reqs)
    tight = make_engine(num_blocks=20, preemption="swap", num_swap_blocks=7)
    for r in reqs:
        tight.add_request(r)
    assert run_all(tight)[0] == expected
    swaps, preemptions = tight.scheduler.num_swap_outs, tight.stats().num_preemptions
    assert 0 < swaps < preemptions  # some victims found no room and were recomputed
    assert _host_free(tight) == 7


def test_no_leaks_with_aborts_swaps_and_recomputes(make_engine, req, run_all, prompts, step_twice):
    engine = make_engine(
        num_blocks=24,
        max_batch_size=6,
        max_tokens_per_step=32,
        preemption="swap",
        num_swap_blocks=12,
    )
    ps = prompts(40, seed=6, lo=3, hi=40)
    finished: set[str] = set()
    swapped_aborts = 0
    for i, p in enumerate(ps):
        engine.add_request(req(str(i), p, max_tokens=5 + i % 13))
        if i % 4 == 3:
            if engine.scheduler.swapped:  # abort a swapped-out request: its host blocks go back
                engine.abort(engine.scheduler.swapped[-1].request_id)
                swapped_aborts += 1
            engine.abort(str(i - 2))
        step_twice(engine, finished)
    _, last = run_all(engine)
    finished |= set(last)
    assert finished == {str(i) for i in range(len(ps))}
    assert engine.scheduler.num_swap_outs > 0 and swapped_aborts > 0
    assert all(c == 0 for c in engine.block_manager.ref_counts())
    assert _host_free(engine) == 12
    stats = engine.stats()
    assert stats.running == stats.waiting == 0
    assert stats.free_blocks + stats.cached_blocks == stats.total_blocks


def test_auto_never_swaps_on_cpu(make_engine, req, run_all, prompts):
    tight = make_engine(num_blocks=20, preemption="auto", device="cpu")
    assert tight.runner.host_cache is None  # no swap space where it would never be used
    for r in _reqs(req, prompts):
        tight.add_request(r)
    run_all(tight)
    assert tight.stats().num_preemptions > 0 and tight.scheduler.num_swap_outs == 0


def test_cost_model_swaps_when_copying_is_cheaper():
    # 1 MB blocks over a 10 GB/s link: 0.2 ms per block both ways.
    cost = PreemptionCost("auto", on_cuda=True, bytes_per_block=10**6, host_link_bytes_per_s=1e10)
    assert not cost.prefer_swap(1024, 64)  # no prefill measured yet: recompute
    cost.observe_step(num_prefill_tokens=4096, seconds=1.0)  # 4,096 tokens/s
    assert cost.prefer_swap(1024, 64)  # 12.8 ms of copies against 250 ms of prefill
    cost.observe_step(num_prefill_tokens=10**7, seconds=1.0)  # a much faster device
    assert cost.prefill_tokens_per_s is not None and cost.prefill_tokens_per_s > 10**6
    assert not cost.prefer_swap(1024, 64)
    cpu = PreemptionCost("auto", on_cuda=False, bytes_per_block=1, host_link_bytes_per_s=1e12)
    cpu.observe_step(1, 1.0)
    assert not cpu.prefer_swap(1024, 64)
    forced = PreemptionCost("swap", on_cuda=False, bytes_per_block=1, host_link_bytes_per_s=1.0)
    assert forced.prefer_swap(1024, 64) and not forced.prefer_swap(0, 0)


def test_host_pool_is_all_or_nothing():
    pool = HostBlockPool(4)
    a = pool.allocate(3)
    assert a == [0, 1, 2] and pool.allocate(2) is None and pool.num_free() == 1
    pool.free(a)
    assert pool.num_free() == 4 and pool.allocate(4) == [0, 1, 2, 3]


def test_swap_in_copies_back_only_blocks_gone_from_the_cache(make_engine, req, run_all, prompts):
    # Every request shares a 24-token system prompt (6 blocks of 4): while one sequence is
    # swapped out, the others keep those blocks resident, so it must not copy them back.
    system = prompts(1, seed=21, lo=24, hi=25)[0]
    reqs = [
        req(str(i), system + p, max_tokens=24) for i, p in enumerate(prompts(8, 22, lo=4, hi=12))
    ]
    expected = _expected(make_engine, run_all, reqs)
    tight = make_engine(num_blocks=24, preemption="swap", num_swap_blocks=96)
    swap_ins: list[list[tuple[int, int]]] = []
    schedule = tight.scheduler.schedule

    def watched_schedule():
        batch = schedule()
        bm = tight.block_manager
        # a block copied into is never one the prefix cache still holds
        assert all(bm.blocks[d].hash is None for _, d in batch.swap_in)
        swap_ins.append(batch.swap_in)
        return batch

    tight.scheduler.schedule = watched_schedule
    for r in reqs:
        tight.add_request(r)
    assert run_all(tight)[0] == expected
    sched = tight.scheduler
    assert sched.num_swap_outs > 0 and sched.num_swap_outs == tight.stats().num_preemptions
    assert sum(len(s) for s in swap_ins) == sched.num_blocks_swapped_in
    assert 0 < sched.num_blocks_swapped_in < sched.num_blocks_swapped_out
    assert all(c == 0 for c in tight.block_manager.ref_counts())
    assert _host_free(tight) == 96
