"""The paged KV cache: per layer, K and V of shape [num_blocks, block_size, kv_heads, head_dim].

Only the model runner holds it. Blocks are zero-filled at start so that padded slots read by a
gather are finite (a masked-out NaN would still poison the attention's weighted sum).
"""

from __future__ import annotations

import os

import torch

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
        self.layers: list[tuple[torch.Tensor, torch.Tensor]] = [
            (
                torch.zeros(shape, dtype=dtype, device=device),
                torch.zeros(shape, dtype=dtype, device=device),
            )
            for _ in range(cfg.num_layers)
        ]

    def copy_out(self, block_ids: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """K/V of `block_ids` per layer, in host memory (pinned on CUDA) — for swapping out."""
        index = torch.tensor(block_ids, dtype=torch.long, device=self.layers[0][0].device)
        pin = index.device.type == "cuda"
        out = []
        for k, v in self.layers:
            out.append(
                (
                    k.index_select(0, index).to("cpu", non_blocking=pin),
                    v.index_select(0, index).to("cpu", non_blocking=pin),
                )
            )
        return out

    def copy_in(self, block_ids: list[int], saved: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Write swapped-out K/V back into (new) blocks `block_ids`."""
        device = self.layers[0][0].device
        index = torch.tensor(block_ids, dtype=torch.long, device=device)
        for (k, v), (sk, sv) in zip(self.layers, saved, strict=True):
            k.index_copy_(0, index, sk.to(device))
            v.index_copy_(0, index, sv.to(device))
