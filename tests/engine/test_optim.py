"""Optimiser groups and the lr schedule, against the released DNRT/DPA code (QTClassification)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from dnrt_core.engine import build, resolve_config, run
from dnrt_core.engine.config import ConfigError
from dnrt_core.engine.optim import build_optimizer, build_scheduler, scheduler_index
from dnrt_core.mechanisms.raa import RAA
from tasks.image import ImageTask
from tests.toy_task import ToyTask


def released_lr(t: int, *, epochs: int, warmup: int, steps: int, base: float, warmup_lr: float,
                min_lr: float) -> float:  # fmt: skip
    """The released ``build_scheduler``: timm's ``CosineLRScheduler`` with
    ``t_initial = (epochs - warmup) * steps``, ``warmup_t = warmup * steps``, no warm-up
    prefix, one cycle, evaluated at schedule position ``t`` (written out here)."""
    warm_t, t_initial = warmup * steps, (epochs - warmup) * steps
    if t < warm_t:
        return warmup_lr + t * (base - warmup_lr) / warm_t
    if t >= t_initial:
        return min_lr
    return min_lr + 0.5 * (base - min_lr) * (1 + math.cos(math.pi * t / t_initial))


def released_update_lrs(**kw) -> list[float]:
    """lr of every update of the released loop: the scheduler starts at ``warmup_lr`` and
    ``engine.py`` calls ``step_update(epoch * n_steps + batch_idx)`` after update
    ``batch_idx``, so update k runs at position ``max(k - 1, 0)``."""
    total = kw["epochs"] * kw["steps"]
    return [released_lr(max(k - 1, 0), **kw) for k in range(total)]


PAPER = {"epochs": 300, "warmup": 20, "steps": 196, "base": 2.5e-4, "warmup_lr": 1e-6,
         "min_lr": 1e-5}  # fmt: skip
PAPER_TCFG = {"opt": "adamw", "lr": 2.5e-4, "weight_decay": 0.05, "sched": "cosine",
              "epochs": 300, "warmup_epochs": 20, "warmup_lr": 1e-6, "min_lr": 1e-5,
              "cooldown_epochs": 20, "sched_lag": 1}  # fmt: skip


def _lrs(tcfg: dict, steps: int) -> list[float]:
    """Drive ``build_scheduler`` the way :class:`Trainer` does; the lr of every update."""
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=float(tcfg["lr"]))
    sched = build_scheduler(opt, tcfg, steps)
    lrs = []
    for k in range(int(tcfg["epochs"]) * steps):
        lrs.append(opt.param_groups[0]["lr"])
        sched.step_update(scheduler_index(tcfg, k + 1))
    return lrs


def test_paper_schedule_matches_released_every_update():
    # CIFAR, batch 256, no drop_last: ceil(50000 / 256) = 196 updates per epoch
    ours, released = _lrs(PAPER_TCFG, 196), released_update_lrs(**PAPER)
    assert len(ours) == len(released) == 300 * 196
    assert max(abs(a - b) for a, b in zip(ours, released, strict=True)) < 1e-18
    per_epoch = ours[::196]
    assert per_epoch[0] == pytest.approx(1e-6)
    assert per_epoch[280:] == pytest.approx([1e-5] * 20)  # min lr held for the last 20 epochs
    assert per_epoch[279] > 1e-5


def test_paper_schedule_matches_timms_scheduler_built_as_released():
    """The released qtcls/schedulers/__init__.py call, stepped as its engine.py steps it."""
    from timm.scheduler import CosineLRScheduler

    steps = 196
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=2.5e-4)
    sched = CosineLRScheduler(opt, t_initial=(300 - 20) * steps, lr_min=1e-5, warmup_lr_init=1e-6,
                              warmup_t=20 * steps, cycle_limit=1, t_in_epochs=False)  # fmt: skip
    released = []
    for epoch in range(300):
        for batch_idx in range(steps):
            released.append(opt.param_groups[0]["lr"])
            sched.step_update(epoch * steps + batch_idx)
        sched.step(epoch)
    assert _lrs(PAPER_TCFG, steps) == released


def test_cooldown_follows_the_warmup():
    tied = _lrs({**PAPER_TCFG, "cooldown_epochs": "warmup"}, 196)
    assert tied == _lrs(PAPER_TCFG, 196)
    short = {**PAPER_TCFG, "cooldown_epochs": "warmup", "warmup_epochs": 0, "epochs": 3}
    assert _lrs(short, 4) == pytest.approx(
        released_update_lrs(**{**PAPER, "warmup": 0, "epochs": 3, "steps": 4})
    )


def test_default_schedule_unchanged():
    """Without the recipe keys: cosine over all epochs, update k at position k (as before)."""
    tcfg = {**PAPER_TCFG, "cooldown_epochs": 0, "sched_lag": 0, "epochs": 30, "warmup_epochs": 2}
    kw = {**PAPER, "epochs": 30, "warmup": 0, "steps": 10}
    ours = _lrs(tcfg, 10)
    warm_t, t_initial = 2 * 10, 30 * 10
    for k in (0, 5, 19):
        assert ours[k] == pytest.approx(1e-6 + k * (2.5e-4 - 1e-6) / warm_t)
    for k in (20, 150, 299):
        cos = 1e-5 + 0.5 * (2.5e-4 - 1e-5) * (1 + math.cos(math.pi * k / t_initial))
        assert ours[k] == pytest.approx(cos)
    assert ours != released_update_lrs(**kw)


def test_trainer_runs_the_released_schedule(tmp_path):
    cfg = {"train.epochs": 6, "train.warmup_epochs": 2, "train.cooldown_epochs": 2,
           "train.sched_lag": 1, "train.min_lr": 1e-4, "train.warmup_lr": 1e-3}  # fmt: skip
    run(ToyTask(), cfg, tmp_path / "r", quiet=True)
    steps = 4  # 144 toy training samples, batch 32, drop_last (the loader default)
    lines = [json.loads(ln) for ln in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    kw = {"epochs": 6, "warmup": 2, "steps": steps, "base": 1e-2, "warmup_lr": 1e-3,
          "min_lr": 1e-4}  # fmt: skip
    # the logged lr is the one the next update uses: position epoch * steps - 1
    expected = [released_lr(e * steps - 1, **kw) for e in range(1, 7)]
    assert [r["lr"] for r in lines] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [("train.cooldown_epochs", 10, "must be < train.epochs"), ("train.sched_lag", 2, "0 or 1"),
     ("train.wd_all_params", "yes", "true or false"), ("train.amp_eval", 1, "true or false"),
     ("train.cooldown_epochs", "later", "integer >= 0 or 'warmup'"),
     ("train.cooldown_epochs", -1, "integer >= 0")],
)  # fmt: skip
def test_recipe_keys_are_validated(tmp_path, key, value, match):
    with pytest.raises(ConfigError, match=match):
        run(ToyTask(), {"train.epochs": 10, key: value}, tmp_path / "r", quiet=True)


@pytest.fixture(scope="module")
def vit_tiny_dnrt():
    small = {"data.train_subset": 40, "data.test_subset": 20}
    cfg = resolve_config(ImageTask(), {"mech.act": "raa", "mech.arr": True, **small})
    return build(ImageTask(), cfg, torch.device("cpu")).model


def test_weight_decay_on_every_parameter(vit_tiny_dnrt):
    """Released main.py: one group of all parameters; timm's filter exempts 124 of 176."""
    tensors = list(vit_tiny_dnrt.parameters())
    assert len(tensors) == 176
    raa = [f"{n}.{p}" for n, m in vit_tiny_dnrt.named_modules() if isinstance(m, RAA)
           for p in ("weight", "bias")]  # fmt: skip
    one = build_optimizer(vit_tiny_dnrt, {**PAPER_TCFG, "wd_all_params": True})
    assert len(one.param_groups) == 1
    assert one.param_groups[0]["weight_decay"] == 0.05
    assert {id(p) for p in one.param_groups[0]["params"]} == {id(p) for p in tensors}
    assert type(one) is torch.optim.AdamW and one.defaults["eps"] == 1e-8
    filtered = build_optimizer(vit_tiny_dnrt, {**PAPER_TCFG, "wd_all_params": False})
    sizes = {g["weight_decay"]: len(g["params"]) for g in filtered.param_groups}
    assert sizes == {0.0: 124, 0.05: 52}
    assert len(raa) == 24  # w and b of the 12 RAA modules
    no_decay = {id(p) for g in filtered.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    named = dict(vit_tiny_dnrt.named_parameters())
    assert all(id(named[n]) in no_decay for n in raa)


def test_autocast_in_training_and_evaluation():
    import warnings
    from contextlib import nullcontext

    from dnrt_core.engine.trainer import autocast_for

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    released = {"amp": "auto", "amp_eval": True}
    with warnings.catch_warnings():  # CPU-only machines: "CUDA is not available"
        warnings.simplefilter("ignore", UserWarning)
        ctx = autocast_for(released, cuda, evaluation=True)
        assert isinstance(ctx, torch.autocast) and ctx.fast_dtype == torch.float16
        assert isinstance(autocast_for({"amp": True}, cuda), torch.autocast)
    assert isinstance(autocast_for({"amp": "auto"}, cuda, evaluation=True), nullcontext)
    off = {"amp": False, "amp_eval": True}
    assert isinstance(autocast_for(off, cuda, evaluation=True), nullcontext)
    assert isinstance(autocast_for(released, cpu, evaluation=True), nullcontext)
