"""CUDA-only checks (marked `gpu`, skipped without a CUDA device); the rest of tests/engine runs
on CUDA too with KVGATE_TEST_DEVICE=cuda (benchmarks/cuda_check.sh)."""

import pytest
import torch

from gpu_worker.kv_cache import HostKvCache, KvCache
from gpu_worker.llama_config import TINY

pytestmark = pytest.mark.gpu


def test_swap_copies_round_trip_in_stream_order():
    cuda = torch.device("cuda")
    cache = KvCache(TINY, num_blocks=16, block_size=4, dtype=torch.float32, device=cuda)
    host = HostKvCache(TINY, num_blocks=8, block_size=4, dtype=torch.float32, device=cuda)
    assert host.pinned and host.data.is_pinned()
    cache.ensure_zeroed(16)
    for k, v in cache.layers:
        k.normal_()
        v.normal_()
    before = [(k.clone(), v.clone()) for k, v in cache.layers]
    out_pairs = [(3, 5), (7, 6), (8, 7), (1, 0)]  # runs and gaps on both sides
    back_to = [10, 11, 2, 9]
    cache.swap_out(out_pairs, host)
    # Overwrite every block right away, as a block swapped out and handed to another sequence
    # in the same step is: the copies queued before must still read the old K/V.
    for k, v in cache.layers:
        k.fill_(float("nan"))
        v.fill_(float("nan"))
    cache.swap_in([(h, d) for (_, h), d in zip(out_pairs, back_to, strict=True)], host)
    torch.cuda.synchronize()
    for (k, v), (k0, v0) in zip(cache.layers, before, strict=True):
        for (src, _), dst in zip(out_pairs, back_to, strict=True):
            assert torch.equal(k[dst], k0[src]) and torch.equal(v[dst], v0[src])


def test_auto_swaps_on_cuda_and_output_is_unchanged(make_engine, req, run_all, prompts):
    ps = prompts(8, seed=5, lo=10, hi=30)
    reqs = [req(str(i), p, max_tokens=24) for i, p in enumerate(ps)]
    roomy = make_engine(device="cuda", num_blocks=256)
    for r in reqs:
        roomy.add_request(r)
    expected = run_all(roomy)[0]
    # Tiny blocks (2 KB) over the host link cost microseconds; recomputing their tokens costs
    # a step's launch overhead at least, so the cost model must choose to swap.
    tight = make_engine(device="cuda", num_blocks=20, preemption="auto", num_swap_blocks=64)
    for r in reqs:
        tight.add_request(r)
    assert run_all(tight)[0] == expected
    assert tight.scheduler.num_swap_outs > 0
    assert tight.scheduler.host_pool.num_free() == 64
