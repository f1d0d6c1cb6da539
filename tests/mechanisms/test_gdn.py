"""GDN: the divisive-normalisation formula, init, positivity, lazy sizing, shapes."""

from __future__ import annotations

import pytest
import torch

from dnrt_core.mechanisms.gdn import GDN


def _formula(x: torch.Tensor, beta: torch.Tensor, gamma: torch.Tensor, dim: int):
    xm = x.movedim(dim, -1)
    norm = beta + (xm * xm) @ gamma.T  # beta_i + sum_j gamma_ij x_j^2
    return (xm / torch.sqrt(norm)).movedim(-1, dim)


def test_init_beta_one_gamma_point_one_identity():
    gdn = GDN(4)
    torch.testing.assert_close(gdn.beta, torch.ones(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(gdn.gamma, 0.1 * torch.eye(4))
    x = torch.randn(3, 4)
    torch.testing.assert_close(gdn(x), x / torch.sqrt(1.0 + 0.1 * x * x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "shape,dim", [((5, 4), -1), ((2, 3, 4), -1), ((2, 4, 3, 3), 1)], ids=["2d", "3d", "4d"]
)
def test_matches_formula_and_backward(shape, dim):
    d = shape[dim]
    gdn = GDN(d)  # dim=None: channels at 1 for 4-D, last otherwise
    with torch.no_grad():
        gdn.gamma_sqrt.copy_(torch.rand(d, d))
        gdn.beta_sqrt.copy_(torch.rand(d) + 0.5)
    x = torch.randn(*shape, requires_grad=True)
    y = gdn(x)
    assert y.shape == x.shape
    torch.testing.assert_close(y, _formula(x, gdn.beta, gdn.gamma, dim), atol=1e-5, rtol=1e-5)
    y.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert gdn.gamma_sqrt.grad.abs().sum() > 0 and gdn.beta_sqrt.grad.abs().sum() > 0


def test_parameters_stay_positive_even_if_raw_values_go_negative():
    gdn = GDN(3)
    with torch.no_grad():
        gdn.beta_sqrt.fill_(-2.0)
        gdn.gamma_sqrt.fill_(-0.5)
    assert torch.all(gdn.beta > 0) and torch.all(gdn.gamma >= 0)
    assert torch.isfinite(gdn(torch.zeros(2, 3))).all()


def test_lazy_sizing_and_state_dict():
    gdn = GDN()
    gdn(torch.randn(2, 6, 3, 3))
    assert gdn.beta_sqrt.shape == (6,) and gdn.gamma_sqrt.shape == (6, 6)
    fresh = GDN()
    fresh.load_state_dict(gdn.state_dict())
    x = torch.randn(1, 6, 2, 2)
    torch.testing.assert_close(fresh(x), gdn(x))
