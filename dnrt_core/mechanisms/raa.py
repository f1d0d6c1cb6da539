"""Response-Adaptive Activation (RAA), DNRT paper eq. 2.

For a d-dimensional feature vector x the response condition is shifted by a
learnable scalar ``s = w·x + b`` shared by all d elements:

    raa       (GELU base):  y = x · Phi(x + s)
    raa_relu  (ReLU base):  y = relu(x + s)
    raa_silu  (SiLU base):  y = x · sigmoid(x + s)

``w`` (d,) and ``b`` (1,) start at zero, so RAA starts as its base activation.
:func:`raa_reference` is the plain definition; the module runs the fused path of
:mod:`.raa_fused` (C kernels on CPU, blocked tensor ops elsewhere), which matches it to
float rounding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedParameter

from .raa_fused import fused_raa

RAA_BASES = ("gelu", "relu", "silu")
_INV_SQRT2 = 1.0 / math.sqrt(2.0)


def raa_reference(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, dim: int = -1, base: str = "gelu"
) -> torch.Tensor:
    """Plain tensor-op RAA (autograd does the backward): the definition the fused path matches."""
    dim = dim % x.dim()
    s = (x.movedim(dim, -1) * weight.to(x.dtype)).sum(-1) + bias.to(x.dtype)
    z = x + s.unsqueeze(dim)
    if base == "gelu":
        return x * (0.5 * (1.0 + torch.erf(z * _INV_SQRT2)))
    if base == "relu":
        return F.relu(z)
    if base == "silu":
        return x * torch.sigmoid(z)
    raise ValueError(f"unknown RAA base {base!r}; valid: {', '.join(RAA_BASES)}")


class RAA(LazyModuleMixin, nn.Module):
    """Response-Adaptive Activation.

    Args:
        num_features: size d of the feature dimension; ``None`` infers it on the first call.
        base: ``"gelu"`` (the paper's eq. 2), ``"relu"`` or ``"silu"``.
        dim: the feature dimension: ``-1`` for ``(N, d)`` / ``(B, T, d)``, ``1`` for
            ``(B, C, H, W)``; ``None`` picks 1 for 4-D inputs and -1 otherwise.

    Shape: input ``(*)`` with ``d`` along ``dim``; output the same shape.
    """

    cls_to_become = None

    def __init__(self, num_features: int | None = None, base: str = "gelu", dim: int | None = -1):
        super().__init__()
        if base not in RAA_BASES:
            raise ValueError(f"unknown RAA base {base!r}; valid: {', '.join(RAA_BASES)}")
        self.base = base
        self.dim = dim
        if num_features is None:
            self.weight = UninitializedParameter()
        else:
            if num_features <= 0:
                raise ValueError(f"num_features must be positive, got {num_features}")
            self.weight = nn.Parameter(torch.zeros(num_features))
        self.bias = nn.Parameter(torch.zeros(1))

    @property
    def num_features(self) -> int | None:
        return None if self.has_uninitialized_params() else self.weight.numel()

    def _feature_dim(self, x: torch.Tensor) -> int:
        if self.dim is None:
            return 1 if x.dim() == 4 else x.dim() - 1
        return self.dim % x.dim()

    def reset_parameters(self) -> None:
        if not self.has_uninitialized_params():
            nn.init.zeros_(self.weight)
        nn.init.zeros_(self.bias)

    def initialize_parameters(self, x: torch.Tensor) -> None:  # LazyModuleMixin hook
        if self.has_uninitialized_params():
            with torch.no_grad():
                self.weight.materialize((x.shape[self._feature_dim(x)],))
                nn.init.zeros_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dim = self._feature_dim(x)
        # (a jit trace records sizes as tensors: the check would be a constant there)
        if not torch.jit.is_tracing() and x.shape[dim] != self.weight.numel():
            raise ValueError(
                f"RAA expects {self.weight.numel()} features along dim {dim}, "
                f"got shape {tuple(x.shape)}"
            )
        return fused_raa(x, self.weight, self.bias, dim, self.base)

    def extra_repr(self) -> str:
        return f"num_features={self.num_features}, base={self.base!r}, dim={self.dim}"
