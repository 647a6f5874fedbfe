"""Cost model of one serving engine (simulated worker, routing simulation).

Defaults model Llama-3-8B in fp16 on one A100-80GB, from roofline arithmetic that matches
published vLLM profiles of that pair to within tens of percent:
- prefill is compute-bound: 2 × 8e9 FLOP per token at ~60 % of 312 TFLOP/s → ~85 µs per token;
- a decode step is memory-bound: 16 GB of weights at ~1.6 TB/s effective → ~10 ms, plus reading
  the KV cache (32 layers × 8 KV heads × 128 × 2 (K, V) × 2 B = 128 KiB per context token →
  ~80 ns per token of context), plus a small per-sequence compute/launch cost.
`time_scale` multiplies every figure (e.g. 0.01 makes a fast simulated worker for tests).
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from config.base import Frozen

# A modelled duration or factor: never negative, and finite (a NaN or infinite one was taken at
# start-up and surfaced as a failed sleep in the engine thread).
Modelled = Annotated[float, msgspec.Meta(ge=0, le=1e6)]


class CostModelConfig(Frozen):
    prefill_s_per_token: Modelled = 85e-6
    prefill_overhead_s: Modelled = 2e-3  # per step that carries any prefill
    decode_step_base_s: Modelled = 10e-3
    decode_s_per_seq: Modelled = 0.15e-3
    decode_s_per_context_token: Modelled = 80e-9
    time_scale: Modelled = 1.0
