"""Mechanism names: the only module that knows the compound names.

A mechanism name is an activation registry name (``relu``, ``raa``, ``tau`` ...) or a
compound: ``dnrt`` (RAA + ARR, the DNRT paper's method), ``dpa`` (TAU with DPA memories),
``X+arr`` (activation X with ARR), ``dpa+arr``. Each resolves to ``(act, arr, dpa)``.

>>> resolve_mechanism("dnrt")
('raa', True, False)
>>> mechanism_name({"act": "gelu", "arr": True})
'gelu+arr'
"""

from __future__ import annotations

from typing import Any

from ..errors import unknown_name_error
from .activations import available_activations, get_activation

#: compound names accepted wherever an activation name is: name -> (act, arr, dpa)
MECHANISM_ALIASES = {
    "dnrt": ("raa", True, False),  # RAA + ARR, the paper's DNRT
}
#: the static baselines, in the papers' table order
BASELINE_ORDER = ("relu", "gelu", "silu", "elu", "selu", "softplus", "gdn", "tau")


def normalize(name: str) -> str:
    """Lower case, stripped, ``-`` as ``_``: the form every lookup uses."""
    return str(name).lower().strip().replace("-", "_")


def is_dpa(act: str | None) -> bool:
    """Whether an ``act`` value asks for DPA (TAU with DPA memories)."""
    return act is not None and normalize(act) == "dpa"


def resolve_mechanism(name: str) -> tuple[str, bool, bool]:
    """``name`` -> (activation, arr, dpa). ``dnrt`` = raa+ARR, ``dpa`` = TAU with DPA memories,
    ``X+arr`` = activation X with ARR. Unknown activations raise ``ValueError``."""
    key = str(name).lower().strip()
    if key in MECHANISM_ALIASES:
        return MECHANISM_ALIASES[key]
    if is_dpa(key):
        return "tau", False, True
    if key.endswith("+arr"):
        act, _, dpa = resolve_mechanism(key[: -len("+arr")])
        return act, True, dpa
    get_activation(key, num_classes=1)  # validates the name
    return key, False, False


def mechanism_names() -> list[str]:
    """Every mechanism name a sweep accepts (activations, ``dnrt``, ``dpa``, ``X+arr``)."""
    acts = [a for a in available_activations() if a != "dpa"]
    return sorted({*acts, *MECHANISM_ALIASES, "dpa", "dpa+arr", *(f"{a}+arr" for a in acts)})


def check_mechanism(name: str) -> tuple[str, bool, bool]:
    """:func:`resolve_mechanism` with a ValueError naming the closest valid mechanism."""
    key = normalize(name)
    valid = mechanism_names()
    if key not in valid:
        raise unknown_name_error("mechanism", name, valid)
    return resolve_mechanism(key)


def act_overrides(name: str) -> dict[str, Any]:
    """Config overrides that ``--act NAME`` stands for: ``mech.act`` (``dpa`` for DPA), plus
    ``mech.arr`` when the name implies ARR."""
    act, arr, dpa = resolve_mechanism(name)
    overrides: dict[str, Any] = {"mech.act": "dpa" if dpa else act}
    if arr:
        overrides["mech.arr"] = True
    return overrides


def mechanism_name(mech: dict[str, Any]) -> str:
    """Display name of a ``mech`` config section: ``dnrt`` (raa+ARR), ``dpa``, ``gelu+arr``,
    ``dpa+arr``, ``relu``... (``default`` = the model's own activation)."""
    act = mech.get("act") or "default"
    if mech.get("dpa") or is_dpa(act):
        base = "dpa" if act in ("dpa", "tau", "default") else f"{act}+dpa"
        return f"{base}+arr" if mech.get("arr") else base
    if mech.get("arr"):
        return "dnrt" if act == "raa" else f"{act}+arr"
    return act


def mechanism_sort_key(name: str) -> tuple[int, int, str]:
    """Paper order: baselines, RAA variants, ``X+arr``, DNRT, DPA, then anything else."""
    n = str(name).lower()
    if n in BASELINE_ORDER:
        return (0, BASELINE_ORDER.index(n), n)
    if n.startswith("raa"):
        return (1, 0, n)
    if n.endswith("+arr"):
        base = n[: -len("+arr")]
        rank = BASELINE_ORDER.index(base) if base in BASELINE_ORDER else len(BASELINE_ORDER)
        return (2, rank, n)
    if n in MECHANISM_ALIASES:
        return (3, 0, n)
    if is_dpa(n) or n.endswith("+dpa"):
        return (4, 0, n)
    return (5, 0, n)
