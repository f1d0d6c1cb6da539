"""The response mechanisms as plain ``nn.Module``s, usable without the engine.

* :mod:`.raa` — Response-Adaptive Activation (the equation and the module); its fused
  autograd path and kernel dispatch are in :mod:`.raa_fused`;
* :mod:`.arr` — Aggregated Response Regularization (class-wise response memory);
* :mod:`.dpa` — TAU and Dual-Perspective Activation;
* :mod:`.gdn` — generalized divisive normalization (a baseline);
* :mod:`.pooling` — the aggregated response of a site (class token, average pool, node);
* :mod:`.activations` — the registry by name (``get_activation("raa")``);
* :mod:`.names` — mechanism names (``dnrt``, ``dpa``, ``X+arr``);
* :mod:`.distributed` — the collectives the memories use under DDP.
"""

from .activations import available_activations, get_activation, register_activation
from .arr import ARR
from .dpa import DPA, TAU
from .gdn import GDN
from .pooling import aggregate
from .raa import RAA

__all__ = [
    "ARR",
    "DPA",
    "GDN",
    "RAA",
    "TAU",
    "aggregate",
    "available_activations",
    "get_activation",
    "register_activation",
]
