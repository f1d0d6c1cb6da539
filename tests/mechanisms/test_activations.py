"""The registry: every mechanism runs forward/backward on 2-D, 3-D and 4-D inputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dnrt_core.mechanisms.activations import (
    available_activations,
    get_activation,
    register_activation,
)

SHAPES = {"2d": (6, 8), "3d": (3, 5, 8), "4d": (3, 8, 4, 4)}
#: the registry names whose modules hold learnable parameters
PARAMETRIC = frozenset({"gdn", "raa", "raa_relu", "raa_silu"})


def test_registry_lists_the_design_names():
    names = available_activations()
    assert names == sorted(names)
    for name in ("relu", "gelu", "silu", "elu", "selu", "softplus", "gdn", "raa", "raa_relu",
                 "raa_silu", "tau", "dpa"):  # fmt: skip
        assert name in names
    assert PARAMETRIC <= set(names)


@pytest.mark.parametrize("name", available_activations())
@pytest.mark.parametrize("kind", sorted(SHAPES))
def test_every_mechanism_forward_backward_shape(name, kind):
    shape = SHAPES[kind]
    act = get_activation(name, num_classes=3, dim=None)  # extra kwargs are dropped
    act.train()
    x = torch.randn(*shape, requires_grad=True)
    if name == "dpa":  # with labels: memories and the channel loss are active
        act.set_targets(torch.tensor([0, 1, 2, 0, 1, 2][: shape[0]]))
    y = act(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.isfinite(y).all()
    y.square().sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape and torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0
    if name in PARAMETRIC:
        params = list(act.parameters())
        assert params and all(p.grad is not None for p in params)
        # the feature dimension is the channel dim (1) for 4-D, the last one otherwise
        channels = shape[1] if kind == "4d" else shape[-1]
        assert params[0].shape[0] == channels


def test_same_names_as_torch_at_default():
    x = torch.randn(4, 5)
    pairs = [("relu", nn.ReLU()), ("gelu", nn.GELU()), ("silu", nn.SiLU()), ("elu", nn.ELU()),
             ("selu", nn.SELU()), ("softplus", nn.Softplus())]  # fmt: skip
    for name, ref in pairs:
        torch.testing.assert_close(get_activation(name)(x), ref(x))
    # RAA variants start as their base
    torch.testing.assert_close(get_activation("raa")(x), nn.GELU()(x), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(get_activation("RAA-relu")(x), nn.ReLU()(x))


def test_unknown_name_lists_valid_names_and_closest_match():
    with pytest.raises(ValueError) as info:
        get_activation("gleu")
    msg = str(info.value)
    assert "'gleu'" in msg and "did you mean 'gelu'" in msg
    for name in available_activations():
        assert name in msg
    with pytest.raises(ValueError, match="did you mean 'raa_silu'"):
        get_activation("raa_sliu")


def test_dpa_needs_num_classes():
    with pytest.raises(ValueError, match="num_classes"):
        get_activation("dpa")


def test_register_a_new_mechanism():
    @register_activation("test_square_act")
    def _square() -> nn.Module:
        return nn.Hardtanh()

    try:
        assert "test_square_act" in available_activations()
        assert isinstance(get_activation("test_square_act", num_features=3), nn.Hardtanh)
    finally:
        from dnrt_core import activations

        activations._REGISTRY.pop("test_square_act")
