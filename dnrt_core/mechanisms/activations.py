"""Registry of response mechanisms by name (like timm's ``get_act_layer``).

>>> act = get_activation("raa", num_features=192)
>>> available_activations()
['dpa', 'elu', 'gdn', 'gelu', 'raa', 'raa_relu', 'raa_silu', 'relu', 'selu', 'silu',
 'softplus', 'tau']
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from torch import nn

from ..errors import closest_name, unknown_name_error
from .dpa import DPA, TAU
from .gdn import GDN
from .raa import RAA

__all__ = [
    "available_activations",
    "closest_name",
    "get_activation",
    "register_activation",
    "unknown_name_error",
]

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


Factory = Callable[..., nn.Module]


def register_activation(name: str) -> Callable[[Factory], Factory]:
    """Decorator: register ``factory(**kw) -> nn.Module`` under ``name``."""

    def wrap(factory: Factory) -> Factory:
        _REGISTRY[name] = factory
        return factory

    return wrap


def available_activations() -> list[str]:
    return sorted(_REGISTRY)


def get_activation(name: str, **kwargs) -> nn.Module:
    """Build the mechanism ``name``. Keyword arguments the factory does not take are dropped,
    so callers may pass ``num_features``/``num_classes`` uniformly."""
    key = str(name).lower().replace("-", "_")
    if key not in _REGISTRY:
        raise unknown_name_error("activation", name, available_activations())
    factory = _REGISTRY[key]
    params = inspect.signature(factory).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        kwargs = {k: v for k, v in kwargs.items() if k in params}
    return factory(**kwargs)


@register_activation("relu")
def _relu() -> nn.Module:
    return nn.ReLU()


@register_activation("gelu")
def _gelu() -> nn.Module:
    return nn.GELU()


@register_activation("silu")
def _silu() -> nn.Module:
    return nn.SiLU()


@register_activation("elu")
def _elu() -> nn.Module:
    return nn.ELU()


@register_activation("selu")
def _selu() -> nn.Module:
    return nn.SELU()


@register_activation("softplus")
def _softplus() -> nn.Module:
    return nn.Softplus()


@register_activation("gdn")
def _gdn(num_features: int | None = None, dim: int | None = None) -> nn.Module:
    return GDN(num_features, dim=dim)


@register_activation("raa")
def _raa(num_features: int | None = None, dim: int | None = None) -> nn.Module:
    return RAA(num_features, base="gelu", dim=dim)


@register_activation("raa_relu")
def _raa_relu(num_features: int | None = None, dim: int | None = None) -> nn.Module:
    return RAA(num_features, base="relu", dim=dim)


@register_activation("raa_silu")
def _raa_silu(num_features: int | None = None, dim: int | None = None) -> nn.Module:
    return RAA(num_features, base="silu", dim=dim)


@register_activation("tau")
def _tau(tau: float = 0.0) -> nn.Module:
    return TAU(tau)


@register_activation("dpa")
def _dpa(
    num_classes: int | None = None,
    num_features: int | None = None,
    tau: float = 0.0,
    momentum: float = 0.9,
    interval: int = 5,
    pool: str = "auto",
) -> nn.Module:
    if num_classes is None:
        raise ValueError("activation 'dpa' needs num_classes (it keeps per-class memories)")
    return DPA(num_classes, num_features, tau=tau, momentum=momentum, interval=interval, pool=pool)
