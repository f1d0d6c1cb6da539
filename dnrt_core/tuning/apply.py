"""``tune(model, act=..., arr=..., dpa=...)``: DNRT / DPA for any ``nn.Module``.

Activation modules are swapped in place; ARR is attached to named sites by forward hooks
and DPA modules replace the activations at their sites, so no model code is forked.

    >>> vit = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=4, num_classes=10)
    >>> model = tune(vit, act="raa", arr=True)          # the paper's DNRT ViT
    >>> out = model(images, targets=labels)
    >>> loss = F.cross_entropy(out, labels) + model.aux_loss()
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from ..mechanisms import DPA, get_activation
from ..mechanisms.names import is_dpa
from .sites import (
    ARR_PLACEMENTS,
    DEFAULT_ARR_LAMBDA,
    FAMILIES,
    default_arr_sites,
    default_dpa_sites,
    detect_family,
    infer_num_classes,
    is_activation,
    match_any,
    split_site,
)
from .specs import ARRSpec, DPASpec, as_spec, check_pool
from .tuned import Tuned, TuneReport


def tune(
    model: nn.Module,
    *,
    act: str | None = None,
    arr: bool | dict | ARRSpec | None = None,
    dpa: bool | dict | DPASpec | None = None,
    num_classes: int | None = None,
    act_sites: str | list[str] | None = None,
    family: str | None = None,
    example_inputs: tuple | torch.Tensor | None = None,
) -> Tuned:
    """Swap activations for ``act`` and attach ARR / DPA; returns a :class:`Tuned` wrapper.

    Args:
        model: any ``nn.Module`` (modified in place and wrapped).
        act: registry name (``raa``, ``gelu``, ``tau``, ...) or ``dpa`` (TAU + DPA memories);
            ``None`` keeps the model's activations.
        arr: ``True`` (the family's default placement), a dict / :class:`ARRSpec` with
            ``sites`` or ``placement`` (``last_stage``, ``every_block``, ... see
            :data:`~dnrt_core.tuning.sites.ARR_PLACEMENTS`), ``pool``, ``arr_lambda``,
            ``momentum``, ``target``; ``None``/``False`` for no ARR.
        dpa: ``True`` or a dict / :class:`DPASpec`; DPA modules replace the activations at
            its sites.
        num_classes: K for the class memories (inferred from the model when possible).
        act_sites: glob(s) restricting which activations are swapped (default: all).
        family: override family detection (``vit``, ``cnn``, ``gnn``, ``text``, ``generic``).
        example_inputs: if given, runs :meth:`Tuned.materialize` on them.
    """
    if is_dpa(act):
        act = "tau"
        dpa = True if dpa is None else dpa
    arr_spec = as_spec(arr, ARRSpec)
    dpa_spec = as_spec(dpa, DPASpec)
    family = family or detect_family(model)
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; valid: {', '.join(FAMILIES)}")
    if (arr_spec or dpa_spec) and num_classes is None:
        num_classes = infer_num_classes(model)
        if num_classes is None:
            raise ValueError("num_classes is needed for ARR/DPA and could not be inferred")
    if act is not None:
        get_activation(act, num_classes=num_classes or 1)  # validate early

    report = TuneReport(family=family, act=act)
    dpa_patterns: list[str] = []
    dpa_pool = "auto"
    if dpa_spec is not None:
        dpa_patterns, dpa_pool = default_dpa_sites(model, family)
        if dpa_spec.sites is not None:
            dpa_patterns = (
                [dpa_spec.sites] if isinstance(dpa_spec.sites, str) else list(dpa_spec.sites)
            )
        dpa_pool = dpa_spec.pool or dpa_pool
        check_pool(dpa_pool)

    # activations, each name gets its own instance (shared objects are split too)
    act_names = [
        n for n, m in model.named_modules(remove_duplicate=False) if n and is_activation(m)
    ]
    for name in act_names:
        if act_sites is not None and not match_any(name, act_sites):
            continue
        at_dpa_site = dpa_spec is not None and match_any(name, dpa_patterns)
        if at_dpa_site:
            new = DPA(num_classes, tau=dpa_spec.tau, momentum=dpa_spec.momentum,
                      interval=dpa_spec.interval, pool=dpa_pool,
                      count_eval=dpa_spec.count_eval)  # fmt: skip
            report.dpa_sites.append(name)
        elif act is not None:
            new = get_activation(act, num_classes=num_classes, dim=None)
        else:
            continue
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, new)
        report.replaced.append(name)
    if dpa_spec is not None and not report.dpa_sites:
        raise ValueError(f"DPA sites {dpa_patterns} match no activation module")

    tuned = Tuned(model, report, arr_spec, dpa_spec)
    if arr_spec is not None:
        if arr_spec.arr_lambda is None:
            arr_spec = dataclasses.replace(arr_spec, arr_lambda=DEFAULT_ARR_LAMBDA[family])
            tuned.arr_spec = arr_spec
        if arr_spec.sites is not None and arr_spec.placement is not None:
            raise ValueError("give ARR sites or an ARR placement, not both")
        if arr_spec.sites is None:
            patterns, pool = default_arr_sites(model, family, arr_spec.placement)
        else:
            sites = arr_spec.sites
            patterns, pool = ([sites] if isinstance(sites, str) else list(sites)), "auto"
        pool = arr_spec.pool or pool
        check_pool(pool)
        report.arr_lambda = float(arr_spec.arr_lambda)
        report.arr_placement = arr_spec.placement or (
            ARR_PLACEMENTS[family][0]
            if arr_spec.sites is None and family in ARR_PLACEMENTS
            else "sites"
        )
        found = False
        for pattern in patterns:
            glob, on_input = split_site(pattern)
            for name, module in model.named_modules():
                if name and match_any(name, glob):
                    site = name + (":in" if on_input else "")
                    if site in report.arr_sites:
                        continue
                    tuned._attach_arr(site, module, num_classes, arr_spec, pool, on_input)
                    report.arr_sites.append(site)
                    found = True
        if not found:
            raise ValueError(f"ARR sites {patterns} match no module of this model")
    if example_inputs is not None:
        inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
        tuned.materialize(*inputs)
    return tuned
