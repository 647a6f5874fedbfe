"""Attention over a paged KV cache, in plain torch.

A step's tokens are flattened into one batch of T tokens: first the prefill group (chunks of
prompts, possibly after a cached prefix), then the decode group (one token per sequence). For each
group, new K/V are written into the cache by slot, then every sequence's context is gathered
through its block table (one `index_select` per layer over precomputed slots), padded to the
group's longest context, and attended with `scaled_dot_product_attention` under an explicit mask.

The cache of one layer is `[num_blocks, block_size, kv_heads, head_dim]`; slot s is row
s // block_size, offset s % block_size. Everything here that depends only on the batch's shape
(slots, masks, padding indices) is built once per step by `build_metadata`, not per layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gpu_worker.device_upload import upload


@dataclass(frozen=True, slots=True)
class AttnGroup:
    """Sequences attended together: flat tokens [start, end) of the step."""

    start: int
    end: int
    batch: int
    max_q: int
    max_k: int
    q_pad_index: torch.Tensor | None  # [batch * max_q] into the group's tokens; None: no padding
    q_unpad_index: torch.Tensor | None  # [end - start] into the padded outputs
    kv_slots: torch.Tensor | None  # [batch * max_k] cache slots; None: use the new K/V as they are
    mask: torch.Tensor | None  # [batch, 1, max_q, max_k] bool, True = may attend
    causal: bool  # no mask, plain causal attention over the new tokens


@dataclass(frozen=True, slots=True)
class AttnMetadata:
    slot_mapping: torch.Tensor  # [T] cache slot of every new token
    groups: tuple[AttnGroup, ...]


def build_metadata(
    query_lens: Sequence[int],
    context_lens: Sequence[int],
    block_tables: Sequence[Sequence[int]],
    block_size: int,
    num_decodes: int,
    device: torch.device,
) -> AttnMetadata:
    """Metadata for sequences given prefills first, then `num_decodes` decodes (query_len 1).

    context_lens[i] counts the sequence's tokens after this step (cached + new), so its new tokens
    sit at positions [context_len - query_len, context_len).
    """
    n = len(query_lens)
    num_prefills = n - num_decodes
    parts: list[torch.Tensor] = []
    for q_len, ctx, table in zip(
        query_lens[:num_prefills],
        context_lens[:num_prefills],
        block_tables[:num_prefills],
        strict=True,
    ):
        pos = torch.arange(ctx - q_len, ctx, dtype=torch.long)
        blocks = torch.tensor(table, dtype=torch.long)[pos // block_size]
        parts.append(blocks * block_size + pos % block_size)
    decode_slots = [
        table[(ctx - 1) // block_size] * block_size + (ctx - 1) % block_size
        for ctx, table in zip(context_lens[num_prefills:], block_tables[num_prefills:], strict=True)
    ]
    parts.append(torch.tensor(decode_slots, dtype=torch.long))
    slot_mapping = upload(torch.cat(parts), device)
    groups: list[AttnGroup] = []
    start = 0
    for lo, hi in ((0, num_prefills), (num_prefills, n)):
        if hi == lo:
            continue
        group = _group(
            start, query_lens[lo:hi], context_lens[lo:hi], block_tables[lo:hi], block_size, device
        )
        groups.append(group)
        start = group.end
    return AttnMetadata(slot_mapping=slot_mapping, groups=tuple(groups))


def _group(
    start: int,
    query_lens: Sequence[int],
    context_lens: Sequence[int],
    block_tables: Sequence[Sequence[int]],
    block_size: int,
    device: torch.device,
) -> AttnGroup:
    batch = len(query_lens)
    num_tokens = sum(query_lens)
    max_q, max_k = max(query_lens), max(context_lens)
    if batch == 1 and context_lens[0] == query_lens[0]:
        # One sequence with nothing cached before it: causal attention over its own new K/V.
        return AttnGroup(start, start + num_tokens, 1, max_q, max_k, None, None, None, None, True)
    max_blocks = -(-max_k // block_size)
    table = torch.tensor(
        [list(t[:max_blocks]) + [0] * (max_blocks - min(len(t), max_blocks)) for t in block_tables],
        dtype=torch.long,
    )
    offsets = torch.arange(block_size, dtype=torch.long)
    kv_slots = (table[:, :, None] * block_size + offsets).reshape(batch, -1)[:, :max_k]
    q_lens = torch.tensor(query_lens, dtype=torch.long)
    ctx = torch.tensor(context_lens, dtype=torch.long)
    q_idx = torch.arange(max_q, dtype=torch.long)
    k_idx = torch.arange(max_k, dtype=torch.long)
    # Query i of a sequence sits at position ctx - q_len + i and sees keys up to that position.
    # Padded query rows (i >= q_len) see the whole context, so no row is empty (no NaN).
    first = (ctx - q_lens)[:, None, None]
    mask = (k_idx[None, None, :] < ctx[:, None, None]) & (
        k_idx[None, None, :] <= first + q_idx[None, :, None]
    )
    mask_t: torch.Tensor | None = None  # decodes of equal lengths: every key is visible
    if not (all(c == max_k for c in context_lens) and max_q == 1):
        mask_t = upload(mask[:, None], device)
    q_pad_index = q_unpad_index = None
    if batch > 1 and max_q > 1:
        offsets_q = torch.cumsum(q_lens, 0) - q_lens
        pad = offsets_q[:, None] + torch.minimum(q_idx[None, :], q_lens[:, None] - 1)
        q_pad_index = upload(pad.reshape(-1), device)
        valid = (q_idx[None, :] < q_lens[:, None]).reshape(-1)
        q_unpad_index = upload(torch.nonzero(valid).squeeze(1), device)
    return AttnGroup(
        start,
        start + num_tokens,
        batch,
        max_q,
        max_k,
        q_pad_index,
        q_unpad_index,
        upload(kv_slots.reshape(-1), device),
        mask_t,
        False,
    )


def write_kv(
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> None:
    """Store new K/V ([T, kv_heads, head_dim]) at their slots."""
    kv_heads, head_dim = k_cache.shape[-2:]
    k_cache.view(-1, kv_heads, head_dim).index_copy_(0, slot_mapping, k)
    v_cache.view(-1, kv_heads, head_dim).index_copy_(0, slot_mapping, v)


def paged_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    meta: AttnMetadata,
) -> torch.Tensor:
    """q [T, heads, head_dim], k/v [T, kv_heads, head_dim] of the step's new tokens → [T, heads,
    head_dim]. Writes k/v into the cache first, so a sequence sees its own new tokens."""
    write_kv(k, v, k_cache, v_cache, meta.slot_mapping)
    kv_heads, head_dim = k_cache.shape[-2:]
    k_flat = k_cache.view(-1, kv_heads, head_dim)
    v_flat = v_cache.view(-1, kv_heads, head_dim)
    outs = [_attend_group(q, k, v, k_flat, v_flat, g) for g in meta.groups]
    return outs[0] if len(outs) == 1 else torch.cat(outs)


def _attend_group(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_flat: torch.Tensor,
    v_flat: torch.Tensor,
    g: AttnGroup,
) -> torch.Tensor:
    heads, head_dim = q.shape[1:]
    qg = q[g.start : g.end]
    if g.q_pad_index is not None:
        qg = qg.index_select(0, g.q_pad_index)
    qg = qg.view(g.batch, g.max_q, heads, head_dim).transpose(1, 2)
    if g.kv_slots is None:
        kg = k[g.start : g.end].unsqueeze(0).transpose(1, 2)
        vg = v[g.start : g.end].unsqueeze(0).transpose(1, 2)
    else:
        kv_shape = (g.batch, g.max_k, k_flat.shape[1], head_dim)
        kg = k_flat.index_select(0, g.kv_slots).view(kv_shape).transpose(1, 2)
        vg = v_flat.index_select(0, g.kv_slots).view(kv_shape).transpose(1, 2)
    out = F.scaled_dot_product_attention(
        qg, kg, vg, attn_mask=g.mask, is_causal=g.causal, enable_gqa=True
    )
    out = out.transpose(1, 2).reshape(g.batch * g.max_q, heads, head_dim)
    if g.q_unpad_index is not None:
        out = out.index_select(0, g.q_unpad_index)
    return out
