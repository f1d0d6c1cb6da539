"""Small torch.distributed helpers (no-ops when not running under DDP)."""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return rank() == 0


def all_gather_cat(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Concatenate ``x`` (first dim may differ per rank) from all ranks in rank order.

    Returns the gathered tensor and the offset of this rank's rows in it.
    """
    if not is_distributed():
        return x, 0
    n = torch.tensor([x.shape[0]], device=x.device, dtype=torch.long)
    sizes = [torch.zeros_like(n) for _ in range(world_size())]
    dist.all_gather(sizes, n)
    sizes_list = [int(s.item()) for s in sizes]
    longest = max(sizes_list)
    padded = x.new_zeros((longest, *x.shape[1:]))
    padded[: x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in sizes_list]
    dist.all_gather(parts, padded.contiguous())
    gathered = torch.cat([p[:s] for p, s in zip(parts, sizes_list, strict=True)], dim=0)
    return gathered, sum(sizes_list[: rank()])
