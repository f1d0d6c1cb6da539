"""Response-Adaptive Activation (RAA), DNRT paper eq. 2.

For a d-dimensional feature vector x the response condition is shifted by a
learnable scalar ``s = w·x + b`` shared by all d elements:

    raa       (GELU base):  y = x · Phi(x + s)
    raa_relu  (ReLU base):  y = relu(x + s)
    raa_silu  (SiLU base):  y = x · sigmoid(x + s)

``w`` (d,) and ``b`` (1,) start at zero, so RAA starts as its base activation.
The forward/backward pass is one fused autograd Function that saves only the
input and the (…, 1) shift, and costs one matvec per vector in each direction.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedParameter

RAA_BASES = ("gelu", "relu", "silu")
_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _shift(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, dim: int) -> torch.Tensor:
    """s = w·x + b along ``dim``, keeping ``dim`` as a size-1 axis."""
    if dim == x.dim() - 1:
        s = torch.matmul(x, weight.to(x.dtype))
    else:
        s = torch.matmul(x.movedim(dim, -1), weight.to(x.dtype))
    return (s + bias.to(x.dtype)).unsqueeze(dim)


def _slope_and_gate(base: str, z: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For y = x·g(z) return (dy/dz = x·g'(z), g(z))."""
    if base == "gelu":
        cdf = 0.5 * (1.0 + torch.erf(z * _INV_SQRT2))
        return x * (torch.exp(-0.5 * z * z) * _INV_SQRT2PI), cdf
    sig = torch.sigmoid(z)
    return x * sig * (1.0 - sig), sig


class _RAAFunction(torch.autograd.Function):
    """Fused RAA: saves x and the shift s only; the gate is recomputed in backward."""

    @staticmethod
    def forward(ctx, x, weight, bias, dim: int, base: str):  # type: ignore[override]
        s = _shift(x, weight, bias, dim)
        z = x + s
        if base == "relu":
            y = torch.relu(z)
        elif base == "gelu":
            y = x * (0.5 * (1.0 + torch.erf(z * _INV_SQRT2)))
        else:
            y = x * torch.sigmoid(z)
        ctx.save_for_backward(x, s, weight)
        ctx.dim = dim
        ctx.base = base
        return y

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        x, s, weight = ctx.saved_tensors
        dim, base = ctx.dim, ctx.base
        z = x + s
        if base == "relu":
            g_z = grad_out * (z > 0).to(grad_out.dtype)
            grad_x_direct = g_z
        else:
            slope, gate = _slope_and_gate(base, z, x)
            g_z = grad_out * slope  # dL/dz_i, the path through the shifted gate
            grad_x_direct = grad_out * gate + g_z
        g_s = g_z.sum(dim=dim, keepdim=True)  # dL/ds per vector
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            w_shape = [1] * x.dim()
            w_shape[dim] = -1
            grad_x = grad_x_direct + g_s * weight.to(x.dtype).view(w_shape)
        if ctx.needs_input_grad[1]:
            xm = x.movedim(dim, -1).reshape(-1, x.shape[dim])
            grad_weight = (g_s.movedim(dim, -1).reshape(1, -1) @ xm).reshape(-1).to(weight.dtype)
        if ctx.needs_input_grad[2]:
            grad_bias = g_s.sum().reshape(1).to(weight.dtype)
        return grad_x, grad_weight, grad_bias, None, None


def raa_reference(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, dim: int = -1, base: str = "gelu"
) -> torch.Tensor:
    """Plain tensor-op RAA (autograd does the backward); the definition the fused path must match."""
    dim = dim % x.dim()
    z = x + _shift(x, weight, bias, dim)
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
        if x.shape[dim] != self.weight.numel():
            raise ValueError(
                f"RAA expects {self.weight.numel()} features along dim {dim}, got shape {tuple(x.shape)}"
            )
        return _RAAFunction.apply(x, self.weight, self.bias, dim, self.base)

    def extra_repr(self) -> str:
        return f"num_features={self.num_features}, base={self.base!r}, dim={self.dim}"
