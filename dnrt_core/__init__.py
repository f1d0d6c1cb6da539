"""dnrt_core: task-independent response mechanisms (RAA, ARR, DPA) and ``tune``."""

from .activations import available_activations, get_activation, register_activation
from .arr import ARR
from .dpa import DPA, TAU
from .gdn import GDN
from .pooling import aggregate
from .raa import RAA
from .tuning import ARRSpec, DPASpec, Tuned, resolve_mechanism, tune

__version__ = "0.1.0"

__all__ = [
    "ARR",
    "ARRSpec",
    "DPA",
    "DPASpec",
    "GDN",
    "RAA",
    "TAU",
    "Tuned",
    "aggregate",
    "available_activations",
    "get_activation",
    "register_activation",
    "resolve_mechanism",
    "tune",
]
