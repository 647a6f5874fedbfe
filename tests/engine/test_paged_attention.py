"""Paged attention equals dense causal attention: random shapes, ragged lengths, cached prefixes,
prefill chunks and decodes in one step, blocks scattered over the cache. Runs on the test device
(`KVGATE_TEST_DEVICE`): on CUDA this is SDPA's GPU kernels with our masks and padding."""

import pytest
import torch
import torch.nn.functional as F

from gpu_worker.paged_attention import build_metadata, paged_attention


def dense_reference(q, k, v):
    """Causal attention of one whole sequence: q [L, H, D], k/v [L, KH, D]."""
    groups = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(groups, dim=1)
    v = v.repeat_interleave(groups, dim=1)
    out = F.scaled_dot_product_attention(
        q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), is_causal=True
    )
    return out.transpose(0, 1)


@pytest.mark.parametrize("seed", range(8))
def test_paged_equals_dense(seed, device):
    gen = torch.Generator().manual_seed(seed)

    def rint(lo, hi):
        return int(torch.randint(lo, hi + 1, (1,), generator=gen))

    block_size = [4, 8, 16][seed % 3]
    kv_heads = rint(1, 3)
    heads = kv_heads * rint(1, 3)
    head_dim = 8 * rint(1, 4)
    num_prefills, num_decodes = rint(0, 3), rint(0, 4)
    if num_prefills + num_decodes == 0:
        num_prefills = 1
    # (tokens already cached, tokens new this step) per sequence; decodes have 1 new token
    shapes = [(rint(0, 40) if rint(0, 1) else 0, rint(1, 37)) for _ in range(num_prefills)]
    shapes += [(rint(0, 60), 1) for _ in range(num_decodes)]
    num_blocks = sum(-(-(c + n) // block_size) for c, n in shapes) + 3
    perm = torch.randperm(num_blocks, generator=gen).tolist()  # scattered block tables
    k_cache = torch.zeros(num_blocks, block_size, kv_heads, head_dim, device=device)
    v_cache = torch.zeros_like(k_cache)
    tables, full, new_q, new_k, new_v = [], [], [], [], []
    for cached, num_new in shapes:
        total = cached + num_new
        table = [perm.pop() for _ in range(-(-total // block_size))]
        tables.append(table)
        q = torch.randn(total, heads, head_dim, generator=gen).to(device)
        k = torch.randn(total, kv_heads, head_dim, generator=gen).to(device)
        v = torch.randn(total, kv_heads, head_dim, generator=gen).to(device)
        for pos in range(cached):  # the cached prefix is already in the cache
            k_cache[table[pos // block_size], pos % block_size] = k[pos]
            v_cache[table[pos // block_size], pos % block_size] = v[pos]
        full.append((q, k, v))
        new_q.append(q[cached:])
        new_k.append(k[cached:])
        new_v.append(v[cached:])
    meta = build_metadata(
        [n for _, n in shapes],
        [c + n for c, n in shapes],
        tables,
        block_size,
        num_decodes,
        device,
    )
    out = paged_attention(
        torch.cat(new_q), torch.cat(new_k), torch.cat(new_v), k_cache, v_cache, meta
    )
    expected = torch.cat(
        [dense_reference(q, k, v)[c:] for (q, k, v), (c, _) in zip(full, shapes, strict=True)]
    )
    assert out.shape == expected.shape and out.device == k_cache.device
    tol = 1e-5 if device.type == "cpu" else 1e-4  # GPU kernels sum in another order
    torch.testing.assert_close(out, expected, atol=tol, rtol=tol)
    # and the new K/V landed in the cache at their positions
    for (_q, k, _v), table in zip(full, tables, strict=True):
        pos = k.shape[0] - 1
        torch.testing.assert_close(k_cache[table[pos // block_size], pos % block_size], k[pos])
