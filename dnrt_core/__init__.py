"""dnrt_core: DNRT (RAA + ARR) and DPA for any PyTorch model.

* :mod:`dnrt_core.mechanisms` — RAA, ARR, TAU/DPA, GDN as plain ``nn.Module``s, the
  registry by name, mechanism names;
* :mod:`dnrt_core.kernels` — the fused C kernels for CPU and their build/loader;
* :mod:`dnrt_core.tuning` — :func:`tune`: swap activations, attach ARR/DPA to sites;
* :mod:`dnrt_core.engine` — the training engine and the task plugin API (:class:`Task`);
* :mod:`dnrt_core.tools` — compare (sweeps and tables), profile, plots.

The mechanisms and ``tune`` need nothing of the engine; the plugin API (``Task``,
``TaskData``, ``ConfigOption``, ``make_loader``, ``EpochSampler``) is imported from here on
first use.
"""

import importlib

from . import _compat
from .mechanisms import (
    ARR,
    DPA,
    GDN,
    RAA,
    TAU,
    aggregate,
    available_activations,
    get_activation,
    register_activation,
)
from .mechanisms.names import resolve_mechanism
from .tuning import ARRSpec, DPASpec, Tuned, tune

__version__ = "0.1.0"

__all__ = [
    "ARR",
    "ARRSpec",
    "ConfigOption",
    "DPA",
    "DPASpec",
    "GDN",
    "RAA",
    "TAU",
    "EpochSampler",
    "Task",
    "TaskData",
    "Tuned",
    "aggregate",
    "available_activations",
    "get_activation",
    "make_loader",
    "register_activation",
    "resolve_mechanism",
    "tune",
]

_compat.install()

#: the plugin API (what a task plugin needs), imported on first use: name -> module
_PLUGIN_API = {
    "Task": ".engine.task",
    "ConfigOption": ".engine.config",
    "TaskData": ".engine.task",
    "make_loader": ".engine.data",
    "EpochSampler": ".engine.data",
}


def __getattr__(name: str):
    """``Task`` / ``TaskData`` (the plugin API) and the old top-level modules, lazily."""
    if name in _PLUGIN_API:
        module = importlib.import_module(_PLUGIN_API[name], __name__)
        return getattr(module, name)
    module = _compat.old_module(name)
    if module is not None:
        return module
    raise AttributeError(f"module 'dnrt_core' has no attribute {name!r}")
