"""The paged KV cache: per layer, K and V of shape [num_blocks, block_size, kv_heads, head_dim].

Only the model runner holds it. A block is zero-filled before its first use, so that padded slots
read by a gather are finite (a masked-out NaN would still poison the attention's weighted sum).
The zeroing is lazy (`ensure_zeroed`, blocks [0, n) as the block manager's high-water mark
grows) rather than at start: zeroing a multi-GB cache up front costs seconds per GB on a VM
whose memory is backed on first touch, and commits memory the load may never need.
"""

from __future__ import annotations

import os

import torch

from gpu_worker.device_upload import upload_list
from gpu_worker.llama_config import LlamaConfig


def bytes_per_block(cfg: LlamaConfig, block_size: int, dtype: torch.dtype) -> int:
    elem = torch.empty((), dtype=dtype).element_size()
    return 2 * cfg.num_layers * block_size * cfg.num_kv_heads * cfg.head_dim * elem


def blocks_for_memory(
    cfg: LlamaConfig, block_size: int, dtype: torch.dtype, device: torch.device, fraction: float
) -> int:
    """How many blocks fit in `fraction` of the device's free memory (host RAM on the CPU)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
    else:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return max(2, int(free * fraction) // bytes_per_block(cfg, block_size, dtype))


class KvCache:
    def __init__(
        self,
        cfg: LlamaConfig,
        num_blocks: int,
        block_size: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        shape = (num_blocks, block_size, cfg.num_kv_heads, cfg.head_dim)
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.device = device
        self.layers: list[tuple[torch.Tensor, torch.Tensor]] = [
            (
                torch.empty(shape, dtype=dtype, device=device),
                torch.empty(shape, dtype=dtype, device=device),
            )
            for _ in range(cfg.num_layers)
        ]
        self._num_zeroed = 0
        self.ensure_zeroed(1)  # block 0 pads every block table

    def ensure_zeroed(self, num_blocks: int) -> None:
        """Zero blocks [0, num_blocks) that were never zeroed. Call before a step reads or writes
        blocks: every block id the step uses must be below `num_blocks`."""
        lo = self._num_zeroed
        if num_blocks <= lo:
            return
        for k, v in self.layers:
            k[lo:num_blocks].zero_()
            v[lo:num_blocks].zero_()
        self._num_zeroed = num_blocks

    def swap_out(self, pairs: list[tuple[int, int]], host: HostKvCache) -> None:
        """Copy device blocks to host blocks, `pairs` of (device id, host id).

        On CUDA the device→host copies are queued on the current stream without waiting (the
        host side is pinned), so they read the blocks before any later kernel on that stream
        writes them: a block swapped out may be handed to another sequence in the same step."""
        index = upload_list([d for d, _ in pairs], self.device)
        staged = torch.stack(
            [
                torch.stack((k.index_select(0, index), v.index_select(0, index)), 1)
                for k, v in self.layers
            ],
            1,
        )  # [n, layers, 2, block_size, kv_heads, head_dim]
        host.write([h for _, h in pairs], staged)

    def swap_in(self, pairs: list[tuple[int, int]], host: HostKvCache) -> None:
        """Copy host blocks back into (new) device blocks, `pairs` of (host id, device id)."""
        staged = host.read([h for h, _ in pairs], self.device)
        index = upload_list([d for _, d in pairs], self.device)
        for layer, (k, v) in enumerate(self.layers):
            k.index_copy_(0, index, staged[:, layer, 0])
            v.index_copy_(0, index, staged[:, layer, 1])


class HostKvCache:
    """The swap space: `[num_blocks, layers, 2, block_size, kv_heads, head_dim]` in host memory,
    pinned when the cache is on CUDA so copies both ways run asynchronously.

    Rule that makes the asynchronous copies safe: the host tensor is only ever read or written
    by copies queued on the device's current stream, never by the CPU, so every copy is ordered
    after the one before it (a host block freed by a swap-in may be reused by the next swap-out).
    The CPU runs the very same copies (one per run of consecutive host blocks), synchronously,
    so the CPU tests cover this code; only the pinning and the asynchrony are CUDA's own."""

    def __init__(
        self,
        cfg: LlamaConfig,
        num_blocks: int,
        block_size: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        shape = (num_blocks, cfg.num_layers, 2, block_size, cfg.num_kv_heads, cfg.head_dim)
        self.pinned = device.type == "cuda"
        self.num_blocks = num_blocks
        # Not zeroed: a host block is always written (swap-out) before it is read (swap-in).
        self.data = torch.empty(shape, dtype=dtype, pin_memory=self.pinned)

    def write(self, block_ids: list[int], staged: torch.Tensor) -> None:
        """Host blocks `block_ids` ← `staged` ([len(block_ids), ...], on the device)."""
        for lo, hi, first in _runs(block_ids):
            self.data[first : first + hi - lo].copy_(staged[lo:hi], non_blocking=self.pinned)

    def read(self, block_ids: list[int], device: torch.device) -> torch.Tensor:
        """Host blocks `block_ids` as a new tensor on `device`."""
        staged = torch.empty(
            (len(block_ids), *self.data.shape[1:]), dtype=self.data.dtype, device=device
        )
        for lo, hi, first in _runs(block_ids):
            staged[lo:hi].copy_(self.data[first : first + hi - lo], non_blocking=self.pinned)
        return staged


def _runs(block_ids: list[int]) -> list[tuple[int, int, int]]:
    """Runs of consecutive ids: (start, end) in `block_ids` and the run's first id."""
    runs: list[tuple[int, int, int]] = []
    lo = 0
    for i in range(1, len(block_ids) + 1):
        if i == len(block_ids) or block_ids[i] != block_ids[i - 1] + 1:
            runs.append((lo, i, block_ids[lo]))
            lo = i
    return runs
