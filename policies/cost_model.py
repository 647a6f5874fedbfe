"""Step time of one engine step under `CostModelConfig` (pure; used by sims and the sim worker)."""

from __future__ import annotations

from config.cost_model import CostModelConfig


def prefill_time_s(cfg: CostModelConfig, new_tokens: int) -> float:
    """Time to prefill `new_tokens` uncached prompt tokens in one step (0 when none)."""
    if new_tokens <= 0:
        return 0.0
    return cfg.time_scale * (cfg.prefill_overhead_s + cfg.prefill_s_per_token * new_tokens)


def decode_time_s(cfg: CostModelConfig, batch_size: int, context_tokens: int) -> float:
    """Time of one decode step for `batch_size` sequences holding `context_tokens` in all."""
    if batch_size <= 0:
        return 0.0
    return cfg.time_scale * (
        cfg.decode_step_base_s
        + cfg.decode_s_per_seq * batch_size
        + cfg.decode_s_per_context_token * context_tokens
    )


def step_time_s(
    cfg: CostModelConfig, prefill_tokens: int, batch_size: int, context_tokens: int
) -> float:
    """A mixed step (chunked prefill riding along with decodes) costs the sum of both parts."""
    return prefill_time_s(cfg, prefill_tokens) + decode_time_s(cfg, batch_size, context_tokens)
