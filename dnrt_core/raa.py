"""Response-Adaptive Activation (RAA), DNRT paper eq. 2.

For a d-dimensional feature vector x the response condition is shifted by a
learnable scalar ``s = w·x + b`` shared by all d elements:

    raa       (GELU base):  y = x · Phi(x + s)
    raa_relu  (ReLU base):  y = relu(x + s)
    raa_silu  (SiLU base):  y = x · sigmoid(x + s)

``w`` (d,) and ``b`` (1,) start at zero, so RAA starts as its base activation.
The forward/backward pass is one fused autograd Function that saves only the
input and the (…, 1) shift, and costs one matvec per vector in each direction;
its elementwise work runs in place on at most two fresh buffers (the backward
recomputes the gate instead of storing it).
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


def _as_3d(x: torch.Tensor, dim: int) -> torch.Tensor:
    """View ``x`` as (A, d, C), the feature dimension in the middle (no copy if contiguous)."""
    return x.reshape(math.prod(x.shape[:dim]), x.shape[dim], -1)


def _shift(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, dim: int) -> torch.Tensor:
    """s = w·x + b along ``dim``, keeping ``dim`` as a size-1 axis (one matvec per vector)."""
    dim = dim % x.dim()
    w = weight.to(x.dtype)
    b = bias.to(x.dtype)
    if dim == x.dim() - 1:
        s = torch.addmv(b, x.reshape(-1, x.shape[-1]), w)
    else:  # (A, d, C): s[a, c] = sum_i w_i x[a, i, c]
        s = torch.matmul(w, _as_3d(x, dim)).add_(b)
    shape = list(x.shape)
    shape[dim] = 1
    return s.reshape(shape)


def _weight_grad(x: torch.Tensor, g_s: torch.Tensor, dim: int) -> torch.Tensor:
    """dL/dw = sum over vectors of dL/ds · x (one matvec)."""
    if dim == x.dim() - 1:
        return torch.mv(x.reshape(-1, x.shape[-1]).t(), g_s.reshape(-1))
    x3 = _as_3d(x, dim)  # (A, d, C) @ (A, C, 1) -> (A, d, 1)
    return torch.bmm(x3, g_s.reshape(x3.shape[0], -1, 1)).sum(dim=(0, 2))


class _RAAFunction(torch.autograd.Function):
    """Fused RAA: saves x and the shift s only; the gate is recomputed in backward."""

    @staticmethod
    def forward(ctx, x, weight, bias, dim: int, base: str):  # type: ignore[override]
        dim = dim % x.dim()
        s = _shift(x, weight, bias, dim)
        y = torch.add(x, s)  # z = x + s, then the gate in place
        if base == "relu":
            y.relu_()
        elif base == "gelu":
            torch.special.ndtr(y, out=y).mul_(x)
        else:
            y.sigmoid_().mul_(x)
        ctx.save_for_backward(x, s, weight)
        ctx.dim = dim
        ctx.base = base
        return y

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        x, s, weight = ctx.saved_tensors
        dim, base = ctx.dim, ctx.base
        g = grad_out
        z = torch.add(x, s)
        if base == "relu":
            # dL/dz = g·1[z > 0]; dy/dx_direct = dy/dz
            g_z = torch.where(z > 0, g, 0.0)
            del z
            g_s = g_z.sum(dim=dim, keepdim=True)
            grad_x = g_z
        elif base == "gelu":
            # y = x·Phi(z):  dL/dz = g·x·phi(z),  direct dL/dx = g·Phi(z) + dL/dz
            grad_x = torch.special.ndtr(z)
            g_z = z.square_().mul_(-0.5).exp_().mul_(x).mul_(g).mul_(_INV_SQRT2PI)
            g_s = g_z.sum(dim=dim, keepdim=True)
            grad_x.mul_(g).add_(g_z)
        else:
            # y = x·sig(z):  dL/dz = g·x·sig·(1 - sig),  direct dL/dx = g·sig + dL/dz
            sig = z.sigmoid_()
            grad_x = torch.mul(g, sig)  # g·sig
            g_z = sig.neg_().add_(1.0).mul_(x).mul_(grad_x)  # g·sig·(1-sig)·x
            g_s = g_z.sum(dim=dim, keepdim=True)
            grad_x.add_(g_z)
        grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            w_shape = [1] * x.dim()
            w_shape[dim] = -1
            grad_x.addcmul_(g_s, weight.to(x.dtype).view(w_shape))
        else:
            grad_x = None
        if ctx.needs_input_grad[1]:
            grad_weight = _weight_grad(x, g_s, dim).to(weight.dtype)
        if ctx.needs_input_grad[2]:
            grad_bias = g_s.sum().reshape(1).to(weight.dtype)
        return grad_x, grad_weight, grad_bias, None, None


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
        if x.shape[dim] != self.weight.numel():
            raise ValueError(
                f"RAA expects {self.weight.numel()} features along dim {dim}, "
                f"got shape {tuple(x.shape)}"
            )
        return _RAAFunction.apply(x, self.weight, self.bias, dim, self.base)

    def extra_repr(self) -> str:
        return f"num_features={self.num_features}, base={self.base!r}, dim={self.dim}"
