"""Moving small host-built tensors (token ids, positions, slots, masks, indices) to the device.

`torch.tensor(values, device="cuda")` and `.to("cuda")` from ordinary (pageable) host memory wait
for the copy, and with it for everything queued on the stream before it: a step that builds its
inputs after queuing its swap copies would stall on them, once per tensor. Staged in pinned
memory the copy is queued like a kernel instead (`non_blocking`) and the host goes on; torch keeps
the pinned buffer alive until the copy has run, so the caller may drop it at once.

On the CPU these return their input as it is (no copy).
"""

from __future__ import annotations

import torch


def upload(values: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`values` (a host tensor) on `device`, without waiting for the copy on CUDA."""
    if device.type != "cuda":
        return values
    return values.pin_memory().to(device, non_blocking=True)


def upload_list(
    values: list[int] | list[float], device: torch.device, dtype: torch.dtype = torch.long
) -> torch.Tensor:
    """A 1-D tensor of `values` on `device`, without waiting for the copy on CUDA."""
    if device.type != "cuda":
        return torch.tensor(values, dtype=dtype)
    if not values:
        return torch.empty(0, dtype=dtype, device=device)  # nothing to copy
    return torch.tensor(values, dtype=dtype, pin_memory=True).to(device, non_blocking=True)
