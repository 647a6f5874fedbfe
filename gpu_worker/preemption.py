"""How a preempted sequence gives up its KV blocks: recompute them later, or swap them to host.

`HostBlockPool` accounts for the host swap space (the tensors live in `kv_cache.HostKvCache`,
owned by the model runner); `PreemptionCost` decides per preemption.

The decision, for a victim with `t` computed tokens in `n` blocks of `b` bytes:
- swap costs the bytes moved both ways over the host link: `2 · n · b / link_bytes_per_s`;
- recompute costs the prefill of its tokens again: `t / prefill_tokens_per_s`, the rate measured
  on this engine's own steps (an exponential moving average of tokens per second over steps that
  prefilled something).
`auto` swaps when swapping is cheaper and the host pool has room; on the CPU it never swaps (the
"host" is the same memory as the cache: a bigger cache does better than a swap space). `swap`
swaps whenever the pool has room; `recompute` never swaps. A full pool always means recompute.
"""

from __future__ import annotations

from typing import Literal

PreemptionMode = Literal["auto", "recompute", "swap"]


class HostBlockPool:
    """Host block ids, each held by at most one swapped-out sequence (never shared)."""

    def __init__(self, num_blocks: int) -> None:
        self.num_blocks = num_blocks
        self._free = list(range(num_blocks - 1, -1, -1))  # pop() hands out low ids first

    def num_free(self) -> int:
        return len(self._free)

    def allocate(self, n: int) -> list[int] | None:
        """`n` host blocks, or None (and nothing taken) if the pool has fewer free."""
        if n > len(self._free):
            return None
        return [self._free.pop() for _ in range(n)]

    def free(self, block_ids: list[int]) -> None:
        self._free.extend(reversed(block_ids))
        assert len(self._free) <= self.num_blocks, "host block freed twice"


class PreemptionCost:
    def __init__(
        self,
        mode: PreemptionMode,
        on_cuda: bool,
        bytes_per_block: int,
        host_link_bytes_per_s: float,
        smoothing: float = 0.2,
    ) -> None:
        self.mode = mode
        self.on_cuda = on_cuda
        self.bytes_per_block = bytes_per_block
        self.host_link_bytes_per_s = host_link_bytes_per_s
        self.prefill_tokens_per_s: float | None = None  # None until a prefill step is measured
        self._smoothing = smoothing

    def observe_step(self, num_prefill_tokens: int, seconds: float) -> None:
        """Feed a step that prefilled `num_prefill_tokens` (> 0) in `seconds` of wall time."""
        if num_prefill_tokens <= 0 or seconds <= 0.0:
            return
        rate = num_prefill_tokens / seconds
        old = self.prefill_tokens_per_s
        self.prefill_tokens_per_s = rate if old is None else old + self._smoothing * (rate - old)

    def swap_cost_s(self, num_blocks: int) -> float:
        return 2.0 * num_blocks * self.bytes_per_block / self.host_link_bytes_per_s

    def recompute_cost_s(self, num_tokens: int) -> float | None:
        rate = self.prefill_tokens_per_s
        return None if rate is None else num_tokens / rate

    def prefer_swap(self, num_tokens: int, num_blocks: int) -> bool:
        """Whether to swap (if the pool has room) a victim of `num_tokens` computed tokens."""
        if num_blocks == 0 or self.mode == "recompute":
            return False
        if self.mode == "swap":
            return True
        if not self.on_cuda:
            return False
        recompute = self.recompute_cost_s(num_tokens)
        return recompute is not None and self.swap_cost_s(num_blocks) < recompute
