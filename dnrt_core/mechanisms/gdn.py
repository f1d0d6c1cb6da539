"""Generalized divisive normalization (GDN) used as an activation baseline."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedParameter

_EPS = 1e-6


class GDN(LazyModuleMixin, nn.Module):
    """y_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j^2) over the feature dimension.

    ``beta`` starts at 1 and ``gamma`` at ``0.1·I``; both are kept positive by
    storing their square roots (reparametrised as ``p**2 + eps``).

    Args:
        num_features: size d of the feature dimension (``None``: inferred on first call).
        dim: feature dimension (``None``: 1 for 4-D inputs, else -1).

    Shape: input ``(*)`` with ``d`` along ``dim``; output the same shape.
    """

    cls_to_become = None

    def __init__(self, num_features: int | None = None, dim: int | None = None):
        super().__init__()
        self.dim = dim
        if num_features is None:
            self.beta_sqrt = UninitializedParameter()
            self.gamma_sqrt = UninitializedParameter()
        else:
            self.beta_sqrt = nn.Parameter(torch.empty(num_features))
            self.gamma_sqrt = nn.Parameter(torch.empty(num_features, num_features))
            self.reset_parameters()

    def _feature_dim(self, x: torch.Tensor) -> int:
        if self.dim is None:
            return 1 if x.dim() == 4 else x.dim() - 1
        return self.dim % x.dim()

    def reset_parameters(self) -> None:
        if self.has_uninitialized_params():
            return
        d = self.beta_sqrt.numel()
        with torch.no_grad():
            self.beta_sqrt.fill_(1.0)
            self.gamma_sqrt.copy_(torch.eye(d) * 0.1**0.5)

    def initialize_parameters(self, x: torch.Tensor) -> None:
        if self.has_uninitialized_params():
            d = x.shape[self._feature_dim(x)]
            with torch.no_grad():
                self.beta_sqrt.materialize((d,))
                self.gamma_sqrt.materialize((d, d))
            self.reset_parameters()

    @property
    def beta(self) -> torch.Tensor:
        return self.beta_sqrt**2 + _EPS

    @property
    def gamma(self) -> torch.Tensor:
        return self.gamma_sqrt**2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dim = self._feature_dim(x)
        xm = x.movedim(dim, -1)
        norm = F.linear(xm * xm, self.gamma.to(x.dtype), self.beta.to(x.dtype))
        return (xm * torch.rsqrt(norm)).movedim(-1, dim)
