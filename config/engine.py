"""The torch engine's options (`engine:` in the worker's YAML)."""

from __future__ import annotations

from typing import Literal

from config.base import Frozen
from config.eviction import EvictionConfig, LruEviction


class EngineConfig(Frozen):
    # "tiny" (random weights, byte tokenizer, for tests), "smollm2" (the embedded GGUF), or a path
    # to a GGUF file of a Llama-architecture model.
    model: str = "tiny"
    dtype: Literal["float32", "bfloat16"] = "float32"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # KV cache size: `num_blocks` when set, else `kv_memory_fraction` of the device's free memory
    # (host RAM on the CPU) after the weights are loaded.
    num_blocks: int | None = None
    kv_memory_fraction: float = 0.2
    block_size: int = 16
    max_batch_size: int = 32  # running sequences per step
    max_tokens_per_step: int = 512  # prefill chunk + decode tokens per step
    max_model_len: int | None = None  # default: the model's max_position_embeddings
    enable_prefix_caching: bool = True
    eviction: EvictionConfig = LruEviction()
    # Preemption when blocks run out: "recompute" always; "auto" swaps to host memory on CUDA
    # when moving the blocks is cheaper than recomputing them.
    preemption: Literal["recompute", "auto"] = "auto"
    seed: int = 0  # tiny model's random weights; unseeded sampling's generator
    num_threads: int | None = None  # torch CPU threads; None leaves torch's default

    def __post_init__(self) -> None:
        if self.block_size <= 0 or self.block_size & (self.block_size - 1):
            raise ValueError("block_size must be a positive power of two")
        if self.num_blocks is not None and self.num_blocks < 2:
            raise ValueError("num_blocks must be at least 2")
        if not 0.0 < self.kv_memory_fraction <= 0.95:
            raise ValueError("kv_memory_fraction must be in (0, 0.95]")
        if self.max_batch_size < 1 or self.max_tokens_per_step < 1:
            raise ValueError("max_batch_size and max_tokens_per_step must be positive")
