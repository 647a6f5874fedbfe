"""The torch engine's options (`engine:` in the worker's YAML)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from config.base import Frozen
from config.eviction import EvictionConfig, WorkloadAwareEviction


class EngineConfig(Frozen):
    # "tiny" (random weights, byte tokenizer, for tests), "smollm2" (the embedded GGUF), or a path
    # to a GGUF file of a Llama-architecture model.
    model: str = "tiny"
    dtype: Literal["float32", "bfloat16"] = "float32"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # KV cache size: `num_blocks` when set, else `kv_memory_fraction` of the device's free memory
    # (host RAM on the CPU) after the weights are loaded.
    num_blocks: int | None = None
    kv_memory_fraction: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.2
    block_size: int = 16
    max_batch_size: int = 32  # running sequences per step
    max_tokens_per_step: int = 512  # prefill chunk + decode tokens per step
    max_model_len: int | None = None  # default: the model's max_position_embeddings
    enable_prefix_caching: bool = True
    # workload_aware beats LRU on the real trace at small caches and is never measurably below it
    # (docs/eviction.md); `{type: lru}` is the baseline.
    eviction: EvictionConfig = WorkloadAwareEviction()
    # Preemption when blocks run out: "recompute" always; "swap" to host memory whenever the swap
    # space has room; "auto" swaps on CUDA when moving the blocks over the host link (both ways)
    # costs less than recomputing their tokens at the measured prefill rate (never on the CPU).
    preemption: Literal["auto", "recompute", "swap"] = "auto"
    # Host swap space in blocks (pinned memory on CUDA). None: 4 GiB worth where swapping can
    # happen (CUDA with "auto", or "swap"), none otherwise; 0 turns swapping off.
    num_swap_blocks: int | None = None
    # device↔host copy bandwidth assumed by "auto"
    host_link_gb_s: Annotated[float, msgspec.Meta(gt=0, le=1e6)] = 12.0
    # float32 on the CPU: store projection weights input-major, so matmuls read them in place
    # instead of re-packing them at every call (faster decode steps; docs/engine.md).
    input_major_weights: bool = True
    seed: int = 0  # tiny model's random weights; unseeded sampling's generator
    num_threads: int | None = None  # torch CPU threads; None leaves torch's default

    def __post_init__(self) -> None:
        if self.block_size <= 0 or self.block_size & (self.block_size - 1):
            raise ValueError("block_size must be a positive power of two")
        if self.num_blocks is not None and self.num_blocks < 2:
            raise ValueError("num_blocks must be at least 2")
        if not 0.0 < self.kv_memory_fraction <= 0.95:
            raise ValueError("kv_memory_fraction must be in (0, 0.95]")
        if self.num_swap_blocks is not None and self.num_swap_blocks < 0:
            raise ValueError("num_swap_blocks must be at least 0")
        if self.host_link_gb_s <= 0.0:
            raise ValueError("host_link_gb_s must be positive")
        if self.max_batch_size < 1 or self.max_tokens_per_step < 1:
            raise ValueError("max_batch_size and max_tokens_per_step must be positive")
