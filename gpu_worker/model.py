"""A Llama-architecture model (RMSNorm, rotate-half RoPE, SwiGLU MLP, grouped-query attention,
tied embeddings) whose `state_dict()` keys are Hugging Face's Llama names, so any loader that
produces HF tensors fills it.

The model is driven by the model runner with a flat batch of a step's tokens and an
`AttnMetadata`; it computes logits only for the rows the runner asks for. `fuse()` (after the
weights are loaded) concatenates q/k/v and gate/up into single matrices and makes the per-name
parameters views of them: fewer, larger matmuls, no extra memory, same state_dict.

`store_input_major()` (float32 on the CPU) then stores every projection weight input-major: the
parameter is still `[out, in]`, but as the transpose of a contiguous `[in, out]` tensor. For
`F.linear` (x @ W.T) with the weight stored output-major, MKL copies the whole weight into its
panel layout at every call, which at decode batch sizes (a few to a few dozen rows) costs as much
as the multiply; stored input-major it reads it in place: 1.2-2.4x faster per matmul at 8-32
rows, the same at 1 row and at prefill sizes. No extra memory, except a copy of a tied LM head
(the embedding lookup wants rows). Call it after loading the weights: a later load does not
reach that copy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gpu_worker.llama_config import LlamaConfig
from gpu_worker.paged_attention import AttnMetadata, paged_attention


def input_major(weight: torch.Tensor) -> torch.Tensor:
    """The same `[out, in]` values, stored so that `.t()` is contiguous."""
    return weight.detach().t().contiguous().t()


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        # Lower precision: normalise in float32, round, then scale in the model's dtype, exactly
        # as transformers does. Scaling before rounding (F.rms_norm's own way) is no less
        # accurate, but SmolLM2 in bfloat16 then answered nonsense where transformers was right.
        normed = F.rms_norm(x.float(), self.weight.shape, None, self.eps)
        return self.weight * normed.to(x.dtype)


class Rope(nn.Module):
    """cos/sin tables for every position, in HF's rotate-half layout ([pos, head_dim])."""

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        half = cfg.head_dim // 2
        inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(half, dtype=torch.float64) / half))
        angles = torch.outer(
            torch.arange(cfg.max_position_embeddings, dtype=torch.float64), inv_freq
        )
        angles = torch.cat([angles, angles], dim=-1)
        self.register_buffer("cos", angles.cos().float(), persistent=False)
        self.register_buffer("sin", angles.sin().float(), persistent=False)

    def tables(
        self, positions: torch.Tensor, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin as [T, 1, head_dim], to broadcast over heads."""
        return (
            self.cos.index_select(0, positions).to(dtype)[:, None],
            self.sin.index_select(0, positions).to(dtype)[:, None],
        )


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class Attention(nn.Module):
    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = (
            cfg.num_heads,
            cfg.num_kv_heads,
            cfg.head_dim,
        )
        q_size, kv_size = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
        self.q_proj = nn.Linear(cfg.hidden_size, q_size, bias=False)
        self.k_proj = nn.Linear(cfg.hidden_size, kv_size, bias=False)
        self.v_proj = nn.Linear(cfg.hidden_size, kv_size, bias=False)
        self.o_proj = nn.Linear(q_size, cfg.hidden_size, bias=False)
        self.qkv_weight: torch.Tensor | None = None

    def fuse(self, input_major_layout: bool = False) -> None:
        fused = torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight]).detach()
        if input_major_layout:
            fused = input_major(fused)
            self.o_proj.weight = nn.Parameter(input_major(self.o_proj.weight), requires_grad=False)
        q, k = self.q_proj.weight.shape[0], self.k_proj.weight.shape[0]
        self.q_proj.weight = nn.Parameter(fused[:q], requires_grad=False)
        self.k_proj.weight = nn.Parameter(fused[q : q + k], requires_grad=False)
        self.v_proj.weight = nn.Parameter(fused[q + k :], requires_grad=False)
        self.qkv_weight = fused

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        kv_cache: tuple[torch.Tensor, torch.Tensor],
        meta: AttnMetadata,
    ) -> torch.Tensor:
        n = x.shape[0]
        heads, kv_heads, d = self.num_heads, self.num_kv_heads, self.head_dim
        if self.qkv_weight is not None:
            qkv = F.linear(x, self.qkv_weight)
            qk = qkv[:, : (heads + kv_heads) * d].view(n, heads + kv_heads, d)
            v = qkv[:, (heads + kv_heads) * d :].view(n, kv_heads, d)
        else:
            qk = torch.cat([self.q_proj(x), self.k_proj(x)], dim=-1).view(n, heads + kv_heads, d)
            v = self.v_proj(x).view(n, kv_heads, d)
        qk = apply_rope(qk, cos, sin)
        out = paged_attention(qk[:, :heads], qk[:, heads:], v, kv_cache[0], kv_cache[1], meta)
        return self.o_proj(out.reshape(n, heads * d))


class Mlp(nn.Module):
    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)
        self.gate_up_weight: torch.Tensor | None = None

    def fuse(self, input_major_layout: bool = False) -> None:
        fused = torch.cat([self.gate_proj.weight, self.up_proj.weight]).detach()
        if input_major_layout:
            fused = input_major(fused)
            down = input_major(self.down_proj.weight)
            self.down_proj.weight = nn.Parameter(down, requires_grad=False)
        n = self.gate_proj.weight.shape[0]
        self.gate_proj.weight = nn.Parameter(fused[:n], requires_grad=False)
        self.up_proj.weight = nn.Parameter(fused[n:], requires_grad=False)
        self.gate_up_weight = fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate_up_weight is not None:
            gate, up = F.linear(x, self.gate_up_weight).chunk(2, dim=-1)
        else:
            gate, up = self.gate_proj(x), self.up_proj(x)
        return self.down_proj(F.silu(gate) * up)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = Mlp(cfg)

    def forward(
        self,
        h: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        kv_cache: tuple[torch.Tensor, torch.Tensor],
        meta: AttnMetadata,
    ) -> torch.Tensor:
        h = h + self.self_attn(self.input_layernorm(h), cos, sin, kv_cache, meta)
        return h + self.mlp(self.post_attention_layernorm(h))


class LlamaModel(nn.Module):
    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class LlamaForCausalLM(nn.Module):
    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.config = cfg
        self.model = LlamaModel(cfg)
        self.rope = Rope(cfg)
        if not cfg.tie_word_embeddings:
            self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.head_input_major: torch.Tensor | None = None  # see store_input_major()

    def init_random(self, seed: int) -> None:
        """Random weights that give a well-spread next-token distribution (tests' tiny model)."""
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith("layernorm.weight") or name == "model.norm.weight":
                    p.fill_(1.0)
                elif name == "model.embed_tokens.weight":
                    p.copy_(torch.randn(p.shape, generator=gen))
                else:  # twice the variance-preserving scale: outputs that depend on context
                    p.copy_(torch.randn(p.shape, generator=gen) * 2.0 / p.shape[1] ** 0.5)

    def fuse(self) -> None:
        for layer in self.model.layers:
            layer.self_attn.fuse()
            layer.mlp.fuse()

    def store_input_major(self) -> bool:
        """Fuse and store every projection input-major (see the module's docstring), where that
        helps: float32 on the CPU. False (and only fused) elsewhere."""
        head = self._head_weight()
        applies = head.device.type == "cpu" and head.dtype == torch.float32
        for layer in self.model.layers:
            layer.self_attn.fuse(applies)
            layer.mlp.fuse(applies)
        if applies:
            self.head_input_major = input_major(head)
        return applies

    def _head_weight(self) -> torch.Tensor:
        return self.lm_head.weight if hasattr(self, "lm_head") else self.model.embed_tokens.weight

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        kv_caches: list[tuple[torch.Tensor, torch.Tensor]],
        meta: AttnMetadata,
        logits_index: torch.Tensor,
    ) -> torch.Tensor:
        """Float32 logits [len(logits_index), vocab] of the chosen token rows."""
        h = self.model.embed_tokens(input_ids)
        cos, sin = self.rope.tables(positions, h.dtype)
        for layer, kv_cache in zip(self.model.layers, kv_caches, strict=True):
            h = layer(h, cos, sin, kv_cache, meta)
        h = self.model.norm(h.index_select(0, logits_index))
        head = self.head_input_major
        return F.linear(h, self._head_weight() if head is None else head).float()
