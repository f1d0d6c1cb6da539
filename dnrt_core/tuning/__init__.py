"""``tune()``: put the mechanisms into any ``nn.Module``.

* :mod:`.sites` — which modules are activations, glob patterns, model families and their
  default ARR / DPA sites; :mod:`.hf` — the same for Hugging Face ``transformers`` models;
* :mod:`.specs` — :class:`ARRSpec` and :class:`DPASpec`;
* :mod:`.tuned` — the :class:`Tuned` wrapper (forward with targets, ``aux_loss``);
* :mod:`.apply` — :func:`tune` itself.
"""

from ..mechanisms.names import MECHANISM_ALIASES, resolve_mechanism
from .apply import tune
from .sites import (
    FAMILIES,
    default_arr_sites,
    default_dpa_sites,
    detect_family,
    infer_num_classes,
    is_activation,
    match_any,
    match_name,
)
from .specs import ARRSpec, DPASpec
from .tuned import PerCallActivation, Tuned, TuneReport

__all__ = [
    "FAMILIES",
    "MECHANISM_ALIASES",
    "ARRSpec",
    "DPASpec",
    "PerCallActivation",
    "TuneReport",
    "Tuned",
    "default_arr_sites",
    "default_dpa_sites",
    "detect_family",
    "infer_num_classes",
    "is_activation",
    "match_any",
    "match_name",
    "resolve_mechanism",
    "tune",
]
