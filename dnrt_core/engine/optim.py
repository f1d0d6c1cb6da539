"""Optimiser and lr schedule of a run, from the ``train`` config section (timm factories).

Two recipe keys exist for parity with the released DNRT/DPA code (QTClassification):

* ``train.wd_all_params``: ``true`` puts every parameter in one weight-decay group (the
  released ``main.py``), RAA's ``w``/``b`` and norm/bias tensors included; ``false`` (default)
  uses timm's filter, which exempts 1-D tensors and the model's ``no_weight_decay()``.
* ``train.cooldown_epochs``: the cosine spans ``epochs - cooldown_epochs`` and ``min_lr`` is
  held for the last ``cooldown_epochs`` (timm's cooldown). ``warmup`` ties it to
  ``warmup_epochs``, as the released scheduler does (``t_initial = total - warm-up`` steps).
* ``train.sched_lag``: update ``k`` (0-based, over the whole run) uses the schedule's value at
  ``k - sched_lag``. ``0`` (default) steps timm's scheduler with the next update's index;
  ``1`` is the released loop, which steps it with the index of the update just done.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def build_optimizer(model: nn.Module, tcfg: dict[str, Any]) -> torch.optim.Optimizer:
    """timm's ``create_optimizer_v2`` for ``train.opt`` / ``lr`` / ``weight_decay``."""
    from timm.optim import create_optimizer_v2

    return create_optimizer_v2(
        model,
        opt=tcfg["opt"],
        lr=float(tcfg["lr"]),
        weight_decay=float(tcfg["weight_decay"]),
        filter_bias_and_bn=not bool(tcfg.get("wd_all_params", False)),
    )


def build_scheduler(optimizer: torch.optim.Optimizer, tcfg: dict[str, Any],
                    steps_per_epoch: int):  # fmt: skip
    """A per-update timm scheduler (``None`` for ``sched: none``), stepped by
    :func:`scheduler_index` after every optimiser update."""
    from timm.scheduler import create_scheduler_v2

    cooldown = cooldown_epochs(tcfg)
    scheduler, _ = create_scheduler_v2(
        optimizer,
        sched=tcfg["sched"],
        num_epochs=int(tcfg["epochs"]) - cooldown,
        cooldown_epochs=cooldown,
        warmup_epochs=int(tcfg["warmup_epochs"]),
        warmup_lr=float(tcfg["warmup_lr"]),
        min_lr=float(tcfg["min_lr"]),
        step_on_epochs=False,
        updates_per_epoch=steps_per_epoch,
    )
    return scheduler


def cooldown_epochs(tcfg: dict[str, Any]) -> int:
    """``train.cooldown_epochs`` as a number (``warmup`` = ``train.warmup_epochs``)."""
    value = tcfg.get("cooldown_epochs") or 0
    return int(tcfg["warmup_epochs"]) if value == "warmup" else int(value)


def scheduler_index(tcfg: dict[str, Any], updates_done: int) -> int:
    """The index to pass to ``step_update`` once ``updates_done`` updates are done: the
    schedule position of the next update (``updates_done - sched_lag``)."""
    return updates_done - int(tcfg.get("sched_lag") or 0)
