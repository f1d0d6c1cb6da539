"""Config values in their domain with their type, checked before anything is built."""

from __future__ import annotations

import pytest

from dnrt_core.engine import resolve_config
from dnrt_core.engine.schema import ENGINE_RULES, check_resume_overrides
from dnrt_core.errors import ConfigError
from tests.toy_task import ToyTask

BAD = {
    "train.epochs": [1.5, True, 0, "2"],
    "data.batch_size": [1.5, False, -1],
    "seed": [1.5, True, -1],
    "train.lr": [0, -1e-3, float("nan"), float("inf"), "abc"],
    "train.amp": ["bogus", 1],
    "train.label_smoothing": [1.0, -0.1],
    "train.warmup_epochs": [0.5],
    "train.eval_every": [0.5, 0],
    "train.max_steps_per_epoch": [1.5],
    "train.stop_after_epoch": [True],
    "train.clip_grad": [float("nan"), -1.0],
    "deterministic": ["maybe", 1],
    "mech.arr_lambda": [float("nan"), float("inf"), -1.0],
    "mech.arr_momentum": [-0.5, 0.0, 1.5],
    "mech.dpa_momentum": [-0.5, 2.0],
    "mech.dpa_tau": [float("nan")],
    "mech.dpa_interval": [1.5],
    "mech.arr_target": ["bogus"],
    "data.num_workers": [1.5],
}
CASES = [(k, v) for k, values in BAD.items() for v in values]


@pytest.mark.parametrize(("key", "value"), CASES, ids=[f"{k}={v!r}" for k, v in CASES])
def test_engine_values_out_of_domain(key, value):
    with pytest.raises(ConfigError, match=rf"^{key} must be .*, got "):
        resolve_config(ToyTask(), {key: value})


@pytest.mark.parametrize(
    ("key", "value"),
    [("model.width", 16.5), ("model.width", True), ("data.n", "many"), ("data.bad_label", 1)],
)
def test_task_keys_keep_the_type_of_their_default(key, value):
    with pytest.raises(ConfigError, match=rf"^{key} must be"):
        resolve_config(ToyTask(), {key: value})


def test_values_in_domain_pass():
    cfg = resolve_config(
        ToyTask(),
        {"train.epochs": 3, "train.lr": 1, "train.amp": False, "train.clip_grad": None,
         "mech.arr_momentum": 1.0, "mech.dpa_tau": -0.5, "model.width": 8, "seed": 0},
    )  # fmt: skip
    assert cfg["train"]["lr"] == 1 and cfg["train"]["amp"] is False


def test_every_engine_default_is_in_its_domain():
    from dnrt_core.engine.config import ENGINE_DEFAULTS, flatten

    flat = flatten(ENGINE_DEFAULTS)
    for key, rule in ENGINE_RULES.items():
        rule.check(key, flat[key])


def test_resume_overrides():
    cfg = {"train": {"epochs": 2, "lr": 0.1}, "model": {"name": "a"}, "mech": {"arr": False}}
    check_resume_overrides(cfg, {"train.epochs": 5, "train.lr": 0.1, "model.name": "a"}, "x")
    with pytest.raises(ConfigError, match="model.name is 'a' there, got 'b'"):
        check_resume_overrides(cfg, {"model.name": "b"}, "x")
    with pytest.raises(ConfigError, match="mech.arr is False there, got 0"):
        check_resume_overrides(cfg, {"mech.arr": 0}, "x")


@pytest.mark.parametrize(
    ("task", "key", "value"),
    [("longtail", "data.imbalance", float("inf")), ("longtail", "data.imbalance", float("nan")),
     ("graph", "model.hidden", True), ("graph", "model.dropout", "abc"),
     ("image", "data.img_size", 16.5)],
)  # fmt: skip
def test_builtin_task_keys(task, key, value):
    from dnrt_core.engine.plugins import load_task

    with pytest.raises(ConfigError, match=rf"^{key} must be"):
        resolve_config(load_task(task), {key: value})
