"""Dual-Perspective Activation (DPA, NeurIPS 2024), as the authors released it.

TAU, the threshold activation unit: ``y = x`` where ``x >= tau``, else 0; the gradient
passes where ``x >= tau``. DPA is TAU plus two per-class, per-channel memories (K × C,
zero-initialised) of the site's aggregated values (class token / spatial mean / node):

* forward memory: of the pre-activation values v;
* backward memory: of the gradient sign at the TAU output, aggregated the same way
  (+1 where g > 0, -1 otherwise, so an exact 0 counts as -1).

A counter advances on every forward with labels (also in eval mode, as released: the
released evaluation passes the labels too); every ``interval``-th one is an update step.
On an update step both memories take each labelled sample **in batch order**,
``mem += m·(new - mem)`` (so the first update stores m·v), the forward one during the
forward, the backward one during the backward. A sample's channel c is *irrelevant* when
its memorised value is below tau, its current value above tau and its memorised sign
negative; on an update step the memorised value is the memory after that sample's own
update, otherwise the memory as it stands (the backward memory is always read as it
stands at forward time). The channel loss is ONE mean of the squares of the irrelevant
values of all DPA sites together (:func:`channel_loss`; 0 when none).

The per-sample recurrence is ARR's :class:`dnrt_core.mechanisms.arr.ClassEMA` on a
zero-initialised memory: vectorised, no loop over samples.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from .arr import ClassEMA
from .distributed import all_gather_cat, is_distributed
from .pooling import aggregate, class_indices


@functools.lru_cache(maxsize=32)
def _below(tau: float, dtype: torch.dtype) -> float:
    """The largest ``dtype`` value below ``tau`` (in ``dtype``), as a float."""
    t = torch.tensor(tau, dtype=dtype)
    return float(torch.nextafter(t, torch.tensor(float("-inf"), dtype=dtype)))


def tau_activation(x: torch.Tensor, tau: float = 0.0) -> torch.Tensor:
    """TAU: ``x`` where ``x >= tau`` else 0 (shape preserved); the gradient passes where
    ``x >= tau``. One fused ``F.threshold`` at the largest value below tau (x > that value
    is x >= tau in x's dtype): as fast as ReLU. For tau = 0 that value is subnormal, so with
    ``torch.set_flush_denormal(True)`` an exact 0 would lose its gradient."""
    if torch.onnx.is_in_onnx_export():  # ONNX's threshold takes no non-zero threshold
        return torch.where(x < tau, 0.0, x)  # the same values
    return F.threshold(x, _below(float(tau), x.dtype), 0.0)


class TAU(nn.Module):
    """Threshold Activation Unit, parameter-free. Shape: ``(*)`` -> ``(*)``."""

    def __init__(self, tau: float = 0.0):
        super().__init__()
        self.tau = float(tau)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return tau_activation(x, self.tau)

    def extra_repr(self) -> str:
        return f"tau={self.tau}"


def channel_loss(selected: Iterable[torch.Tensor]) -> torch.Tensor | None:
    """The channel loss of one forward: the mean of the squares of all irrelevant values of
    all sites concatenated (``DPA.last_selected`` of each site), 0 when there are none;
    ``None`` when no site selected (no labelled training forward)."""
    values = [v for v in selected if v is not None]
    if not values:
        return None
    flat = torch.cat(values) if len(values) > 1 else values[0]
    return flat.square().mean() if flat.numel() else flat.new_zeros(())


class DPA(nn.Module):
    """TAU with forward/backward class memories and the channel-denoising rule.

    Args:
        num_classes: K.
        num_features: channels C (``None``: inferred from the first labelled batch).
        tau: TAU threshold.
        momentum: memory momentum m (``mem += m·(new - mem)``).
        interval: update the memories on every ``interval``-th labelled forward.
        pool: how a sample's channels are aggregated
            (see :func:`dnrt_core.mechanisms.pooling.aggregate`).
        count_eval: labelled forwards in eval mode advance the counter too (as released).

    Labels are given with :meth:`set_targets` (``tune`` does it); without labels, or in
    eval mode, DPA is plain TAU. After a labelled training forward :attr:`last_selected`
    holds the irrelevant values of that forward (1-D, with autograd) and
    :attr:`last_loss` this site's own channel loss. Shape: ``(*)`` -> ``(*)``.
    """

    def __init__(
        self,
        num_classes: int,
        num_features: int | None = None,
        tau: float = 0.0,
        momentum: float = 0.9,
        interval: int = 5,
        pool: str = "auto",
        count_eval: bool = True,
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
        self.count_eval = bool(count_eval)
        d = num_features or 0
        self.register_buffer("forward_memory", torch.zeros(num_classes, d))
        self.register_buffer("backward_memory", torch.zeros(num_classes, d))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self._register_load_state_dict_pre_hook(self._on_load)
        self.targets: torch.Tensor | None = None
        self.last_selected: torch.Tensor | None = None

    @property
    def last_loss(self) -> torch.Tensor | None:
        """This site's channel loss of the last labelled training forward (``None`` otherwise)."""
        return channel_loss([self.last_selected])

    def reset_parameters(self) -> None:
        for buf in (self.forward_memory, self.backward_memory, self.step):
            buf.zero_()

    def _on_load(self, state_dict, prefix, *args, **kwargs) -> None:
        for name in ("forward_memory", "backward_memory"):
            stored = state_dict.get(prefix + name)
            if stored is not None and stored.shape != getattr(self, name).shape:
                setattr(self, name, getattr(self, name).new_zeros(stored.shape))
        # the set-flags of the earlier dnrt DPA (whose first update stored v as is)
        for name in ("forward_initialized", "backward_initialized"):
            state_dict.pop(prefix + name, None)

    def set_targets(self, targets: torch.Tensor | None) -> None:
        self.targets = targets

    def _ensure_size(self, d: int) -> None:
        if self.forward_memory.shape[1] == 0:
            self.forward_memory = self.forward_memory.new_zeros(self.num_classes, d)
            self.backward_memory = self.backward_memory.new_zeros(self.num_classes, d)
        elif self.forward_memory.shape[1] != d:
            raise ValueError(f"DPA memory has d={self.forward_memory.shape[1]}, input has d={d}")

    def _update(self, memory: torch.Tensor, values: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-sample EMA of ``values`` (B, C) into ``memory`` in batch order (under DDP over
        the all-gathered batch in rank order, so every rank holds the same memory); returns
        each sample's memory after its own update."""
        ema = ClassEMA(memory, None, self.momentum, after=True, owner="DPA")
        if is_distributed():
            all_values, offset = all_gather_cat(values)
            all_y, _ = all_gather_cat(y)
            return ema.targets(all_values, all_y)[offset : offset + values.shape[0]]
        return ema.targets(values, y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = tau_activation(x, self.tau)
        self.last_selected = None
        if self.targets is None or not (self.training or self.count_eval):
            return out
        y = class_indices(self.targets).to(x.device)
        if y.numel() and int(y.max()) >= self.num_classes:
            raise ValueError(
                f"label {int(y.max())} out of range for DPA with num_classes={self.num_classes}"
            )
        self.step += 1
        if not self.training:
            return out
        agg = aggregate(x, self.pool)
        if agg.shape[0] != y.shape[0]:
            raise ValueError(f"DPA got {agg.shape[0]} aggregated samples but {y.shape[0]} labels")
        self._ensure_size(agg.shape[1])
        values = agg.float()
        update = int(self.step) % self.interval == 0
        labelled = y >= 0
        yc = y.clamp(min=0)
        with torch.no_grad():
            if update:
                remembered = self._update(self.forward_memory, values.detach(), y)
            else:
                remembered = self.forward_memory.index_select(0, yc)
            irrelevant = (
                (remembered < self.tau)
                & (values.detach() > self.tau)
                & (self.backward_memory.index_select(0, yc) < 0)
                & labelled[:, None]
            )
        self.last_selected = values[irrelevant]
        if update and out.requires_grad:
            out.register_hook(self._backward_hook(y))
        return out

    def _backward_hook(self, y: torch.Tensor):
        def hook(grad: torch.Tensor) -> None:
            with torch.no_grad():
                signs = torch.where(aggregate(grad, self.pool) > 0, 1.0, -1.0)
                self._update(self.backward_memory, signs, y)

        return hook

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, tau={self.tau}, momentum={self.momentum}, "
            f"interval={self.interval}, pool={self.pool!r}, count_eval={self.count_eval}"
        )
