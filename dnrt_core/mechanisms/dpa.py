"""Dual-Perspective Activation (DPA, NeurIPS 2024).

TAU, the threshold activation unit: ``y = x`` where ``x > tau``, else 0; its
gradient is zero where ``x < tau``. DPA is TAU plus two per-class, per-channel
memories updated every ``interval``-th training step with momentum m
(``mean += m·(new - mean)``; the first update just stores ``new``):

* forward memory: the class mean of the aggregated pre-activation value;
* backward memory: the class mean of the sign (+1/-1) of the gradient that
  reaches the aggregated output.

Channel c is *irrelevant* for a sample of class k when its memorised value is
below tau, its current aggregated value is above tau and its memorised gradient
sign is negative. The channel loss is the mean of the squared current
aggregated values over the irrelevant (sample, channel) pairs (0 when none).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .distributed import is_distributed
from .pooling import aggregate, class_indices


def tau_activation(x: torch.Tensor, tau: float = 0.0) -> torch.Tensor:
    """TAU: ``x`` where ``x > tau`` else 0 (shape preserved); the gradient is zero where
    ``x <= tau``. This is exactly ``F.threshold(x, tau, 0)``: one fused kernel, as fast as ReLU."""
    return F.threshold(x, float(tau), 0.0)


class TAU(nn.Module):
    """Threshold Activation Unit, parameter-free. Shape: ``(*)`` -> ``(*)``."""

    def __init__(self, tau: float = 0.0):
        super().__init__()
        self.tau = float(tau)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return tau_activation(x, self.tau)

    def extra_repr(self) -> str:
        return f"tau={self.tau}"


class DPA(nn.Module):
    """TAU with forward/backward class memories and the channel-denoising loss.

    Args:
        num_classes: K.
        num_features: channels d (``None``: inferred from the first labelled batch).
        tau: TAU threshold.
        momentum: memory momentum m.
        interval: update the memories every ``interval``-th training step.
        pool: how a sample's channels are aggregated (see :func:`dnrt_core.pooling.aggregate`).

    Labels are given with :meth:`set_targets` (``tune`` does it); without labels,
    or in eval mode, DPA is plain TAU. After a labelled training forward,
    :attr:`last_loss` holds the channel loss of that forward.
    Shape: ``(*)`` -> ``(*)``.
    """

    def __init__(
        self,
        num_classes: int,
        num_features: int | None = None,
        tau: float = 0.0,
        momentum: float = 0.9,
        interval: int = 5,
        pool: str = "auto",
    ):
        super().__init__()
        if num_classes <= 0:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        if interval <= 0:
            raise ValueError(f"DPA interval must be positive, got {interval}")
        self.num_classes = num_classes
        self.tau = float(tau)
        self.momentum = float(momentum)
        self.interval = int(interval)
        self.pool = pool
        d = num_features or 0
        self.register_buffer("forward_memory", torch.zeros(num_classes, d))
        self.register_buffer("backward_memory", torch.zeros(num_classes, d))
        self.register_buffer("forward_initialized", torch.zeros(num_classes, dtype=torch.bool))
        self.register_buffer("backward_initialized", torch.zeros(num_classes, dtype=torch.bool))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self._register_load_state_dict_pre_hook(self._resize_on_load)
        self.targets: torch.Tensor | None = None
        self.last_loss: torch.Tensor | None = None

    def reset_parameters(self) -> None:
        for buf in (self.forward_memory, self.backward_memory, self.step):
            buf.zero_()
        self.forward_initialized.zero_()
        self.backward_initialized.zero_()

    def _resize_on_load(self, state_dict, prefix, *args, **kwargs) -> None:
        for name in ("forward_memory", "backward_memory"):
            stored = state_dict.get(prefix + name)
            if stored is not None and stored.shape != getattr(self, name).shape:
                setattr(self, name, getattr(self, name).new_zeros(stored.shape))

    def set_targets(self, targets: torch.Tensor | None) -> None:
        self.targets = targets

    def _ensure_size(self, d: int) -> None:
        if self.forward_memory.shape[1] == 0:
            self.forward_memory = self.forward_memory.new_zeros(self.num_classes, d)
            self.backward_memory = self.backward_memory.new_zeros(self.num_classes, d)
        elif self.forward_memory.shape[1] != d:
            raise ValueError(f"DPA memory has d={self.forward_memory.shape[1]}, input has d={d}")

    @staticmethod
    def _class_means(values: torch.Tensor, y: torch.Tensor, num_classes: int):
        valid = y >= 0
        values, y = values[valid], y[valid]
        sums = values.new_zeros(num_classes, values.shape[1]).index_add_(0, y, values)
        counts = torch.bincount(y, minlength=num_classes)
        if is_distributed():  # every rank must hold the same memory
            dist.all_reduce(sums)
            dist.all_reduce(counts)
        present = counts > 0
        return sums / counts.clamp(min=1)[:, None].to(values.dtype), present

    def _momentum_update(self, memory, initialized, new, present) -> None:
        blended = memory + self.momentum * (new - memory)
        fresh = present & ~initialized
        memory.copy_(
            torch.where(fresh[:, None], new, torch.where(present[:, None], blended, memory))
        )
        initialized |= present

    def channel_loss(self, agg: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Loss on the aggregated pre-activation values ``agg`` (B, d) with labels ``y`` (B,)."""
        valid = (
            (y >= 0)
            & self.forward_initialized[y.clamp(min=0)]
            & self.backward_initialized[y.clamp(min=0)]
        )
        yc = y.clamp(min=0)
        irrelevant = (
            (self.forward_memory[yc] < self.tau)
            & (agg.detach() > self.tau)
            & (self.backward_memory[yc] < 0)
            & valid[:, None]
        )
        if not bool(irrelevant.any()):
            return agg.sum() * 0.0
        return agg[irrelevant].pow(2).mean()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = tau_activation(x, self.tau)
        self.last_loss = None
        if not self.training or self.targets is None:
            return out
        y = class_indices(self.targets).to(x.device)
        if y.numel() and int(y.max()) >= self.num_classes:
            raise ValueError(
                f"label {int(y.max())} out of range for DPA with num_classes={self.num_classes}"
            )
        agg = aggregate(x, self.pool)
        if agg.shape[0] != y.shape[0]:
            raise ValueError(f"DPA got {agg.shape[0]} aggregated samples but {y.shape[0]} labels")
        self._ensure_size(agg.shape[1])
        self.last_loss = self.channel_loss(agg.float(), y)
        self.step += 1
        if int(self.step) % self.interval == 0:
            with torch.no_grad():
                new, present = self._class_means(agg.detach().float(), y, self.num_classes)
                self._momentum_update(self.forward_memory, self.forward_initialized, new, present)
            if out.requires_grad:
                out.register_hook(self._backward_hook(y))
        return out

    def _backward_hook(self, y: torch.Tensor):
        def hook(grad: torch.Tensor) -> None:
            with torch.no_grad():
                signs = torch.where(aggregate(grad, self.pool) >= 0, 1.0, -1.0)
                new, present = self._class_means(signs.float(), y, self.num_classes)
                self._momentum_update(self.backward_memory, self.backward_initialized, new, present)

        return hook

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, tau={self.tau}, momentum={self.momentum}, "
            f"interval={self.interval}, pool={self.pool!r}"
        )
