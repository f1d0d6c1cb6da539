"""The specs of ARR and DPA: where (sites, pool) and how (weight, momentum, ...).

Field names follow the config keys of the ``mech`` section without their ``arr_`` /
``dpa_`` prefix, except the loss weights, which keep the config's full name
(``arr_lambda``, ``dpa_lambda``: ``lambda`` is a Python keyword).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, fields
from typing import TypeVar

from ..mechanisms.pooling import POOLS


@dataclass
class ARRSpec:
    """Where and how ARR acts. ``sites=None`` uses ``placement``, a named placement of the
    model family (:data:`dnrt_core.tuning.sites.ARR_PLACEMENTS`; ``None`` = the family's
    default). A site ending in ``:in`` takes the module's input as the response.
    ``arr_lambda=None`` takes the family's default weight
    (:data:`dnrt_core.tuning.sites.DEFAULT_ARR_LAMBDA`).

    The total loss is ``L_task + arr_lambda · mean_j L_arr^j`` over the J sites.
    """

    sites: str | list[str] | None = None
    placement: str | None = None
    pool: str | None = None
    arr_lambda: float | None = None
    momentum: float = 0.1
    target: str = "after"


@dataclass
class DPASpec:
    """Where and how DPA acts. ``sites`` select activation modules to become DPA.

    The total loss is ``L_task + dpa_lambda · L_dpa``, L_dpa one mean over the irrelevant
    values of all sites. ``count_eval``: labelled eval forwards advance the update counter
    (as released).
    """

    sites: str | list[str] | None = None
    pool: str | None = None
    dpa_lambda: float = 1.0
    momentum: float = 0.9
    interval: int = 5
    tau: float = 0.0
    count_eval: bool = True


Spec = TypeVar("Spec", ARRSpec, DPASpec)
#: the loss-weight field of each spec (a dict's legacy key ``lam`` maps to it)
_LAMBDA_FIELD = {ARRSpec: "arr_lambda", DPASpec: "dpa_lambda"}


def as_spec(value: bool | dict | Spec | None, spec_cls: type[Spec]) -> Spec | None:
    """``None``/``False`` -> no spec; ``True`` -> defaults; a dict -> the spec with those fields."""
    if value is None or value is False:
        return None
    if value is True:
        return spec_cls()
    if isinstance(value, spec_cls):
        return value
    if isinstance(value, dict):
        value = dict(value)
        if "lam" in value:
            warnings.warn(
                f"{spec_cls.__name__} key 'lam' is now {_LAMBDA_FIELD[spec_cls]!r}",
                DeprecationWarning,
                stacklevel=3,
            )
            value.setdefault(_LAMBDA_FIELD[spec_cls], value.pop("lam"))
        valid = {f.name for f in fields(spec_cls)}
        unknown = set(value) - valid
        if unknown:
            raise ValueError(
                f"unknown {spec_cls.__name__} keys {sorted(unknown)}; valid: {sorted(valid)}"
            )
        return spec_cls(**{k: v for k, v in value.items() if v is not None})
    raise TypeError(f"expected True, a dict or {spec_cls.__name__}, got {type(value).__name__}")


def check_pool(pool: str) -> None:
    """Raise ``ValueError`` for a pool name :func:`dnrt_core.mechanisms.pooling.aggregate` lacks."""
    if pool not in POOLS:
        raise ValueError(f"unknown pool {pool!r}; valid: {', '.join(POOLS)}")
