"""RAA: equals its base at init, equals eq. 2 for random w, b, fused backward == autograd."""

from __future__ import annotations

import io
import math

import pytest
import torch
import torch.nn.functional as F

from dnrt_core.mechanisms.raa import RAA, RAA_BASES, raa_reference

# (input shape, feature dim): (N, d), (B, T, d), (B, C, H, W) with channels at dim 1
CASES = [((6, 5), -1), ((2, 3, 5), -1), ((2, 5, 3, 4), 1)]
BASE_FN = {"gelu": F.gelu, "relu": F.relu, "silu": F.silu}


def _equation(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, dim: int, base: str):
    """DESIGN.md, written out independently of dnrt_core: s = w·x + b per feature vector."""
    xm = x.movedim(dim, -1)
    s = (xm @ w + b).unsqueeze(-1)
    z = xm + s
    if base == "gelu":
        y = xm * 0.5 * (1.0 + torch.erf(z / math.sqrt(2.0)))
    elif base == "relu":
        y = torch.clamp(z, min=0.0)
    else:
        y = xm / (1.0 + torch.exp(-z))
    return y.movedim(-1, dim)


def _randomised(module: RAA, d: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        module.weight.copy_(torch.randn(d, generator=g) * 0.5)
        module.bias.copy_(torch.randn(1, generator=g))
    return module.weight.detach().clone(), module.bias.detach().clone()


@pytest.mark.parametrize("base", RAA_BASES)
@pytest.mark.parametrize("shape,dim", CASES)
def test_equals_base_activation_at_init(base, shape, dim):
    d = shape[dim]
    x = torch.randn(*shape)
    module = RAA(d, base=base, dim=dim)
    assert torch.count_nonzero(module.weight) == 0 and torch.count_nonzero(module.bias) == 0
    torch.testing.assert_close(module(x), BASE_FN[base](x), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("base", RAA_BASES)
@pytest.mark.parametrize("shape,dim", CASES)
def test_equals_equation_for_random_parameters(base, shape, dim):
    d = shape[dim]
    x = torch.randn(*shape)
    module = RAA(d, base=base, dim=dim)
    w, b = _randomised(module, d)
    expected = _equation(x, w, b, dim, base)
    torch.testing.assert_close(module(x), expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(raa_reference(x, w, b, dim, base), expected, atol=1e-6, rtol=1e-5)
    # and it is not the base activation any more
    assert not torch.allclose(module(x), BASE_FN[base](x), atol=1e-3)


def test_shift_is_one_scalar_per_vector_over_the_channel_dim():
    """For 4-D inputs each pixel gets its own s computed over C, not over W."""
    x = torch.randn(2, 3, 4, 5)
    module = RAA(3, base="relu", dim=1)
    with torch.no_grad():
        module.weight.copy_(torch.tensor([1.0, -2.0, 0.5]))
        module.bias.fill_(0.25)
    s = torch.einsum("bchw,c->bhw", x, module.weight.detach()) + 0.25
    torch.testing.assert_close(module(x), torch.relu(x + s[:, None]))


@pytest.mark.parametrize("base", RAA_BASES)
@pytest.mark.parametrize("shape,dim", CASES)
def test_gradients_reach_weight_and_bias_and_match_autograd(base, shape, dim):
    d = shape[dim]
    x = torch.randn(*shape, requires_grad=True)
    module = RAA(d, base=base, dim=dim)
    w, b = _randomised(module, d, seed=1)
    grad_out = torch.randn(*shape)
    module(x).backward(grad_out)
    assert module.weight.grad is not None and module.weight.grad.abs().sum() > 0
    assert module.bias.grad is not None and module.bias.grad.abs().sum() > 0

    x_ref = x.detach().clone().requires_grad_(True)
    w_ref, b_ref = w.clone().requires_grad_(True), b.clone().requires_grad_(True)
    _equation(x_ref, w_ref, b_ref, dim, base).backward(grad_out)
    torch.testing.assert_close(x.grad, x_ref.grad, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(module.weight.grad, w_ref.grad, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(module.bias.grad, b_ref.grad, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "shape,dim,d", [((4, 6), -1, 6), ((2, 3, 6), None, 6), ((2, 6, 3, 3), None, 6)]
)
def test_lazy_num_features_and_state_dict_roundtrip(shape, dim, d):
    lazy = RAA(base="gelu", dim=dim)
    assert lazy.num_features is None
    x = torch.randn(*shape)
    lazy(x)
    assert lazy.num_features == d and lazy.weight.shape == (d,)
    with torch.no_grad():
        lazy.weight.normal_()
        lazy.bias.fill_(0.3)
    expected = lazy(x)

    buffer = io.BytesIO()
    torch.save(lazy.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    fresh = RAA(base="gelu", dim=dim)
    assert fresh.num_features is None
    fresh.load_state_dict(state)
    assert fresh.num_features == d
    torch.testing.assert_close(fresh(x), expected)
    torch.testing.assert_close(fresh.weight, lazy.weight)


def test_wrong_width_and_unknown_base_raise():
    with pytest.raises(ValueError, match="expects 4 features"):
        RAA(4)(torch.randn(2, 5))
    with pytest.raises(ValueError, match="unknown RAA base"):
        RAA(4, base="tanh")
    with pytest.raises(ValueError, match="positive"):
        RAA(0)


def test_cost_is_one_matvec_no_square_weights():
    module = RAA(192)
    assert sum(p.numel() for p in module.parameters()) == 192 + 1


def test_bfloat16_autocast_matches_float32():
    module = RAA(16)
    _randomised(module, 16, seed=4)
    x = torch.randn(3, 40, 16)
    ref = module(x)
    (gw_ref,) = torch.autograd.grad(ref.sum(), (module.weight,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = module(x.to(torch.bfloat16))
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, atol=0.05, rtol=0.02)
    (gw,) = torch.autograd.grad(out.float().sum(), (module.weight,))
    assert gw.dtype == torch.float32
    torch.testing.assert_close(gw, gw_ref, atol=0.5, rtol=0.01)
