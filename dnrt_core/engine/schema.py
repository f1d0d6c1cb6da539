"""Domains and types of config values, checked before anything is built or loaded.

The engine's keys follow :data:`ENGINE_RULES`. A task's own keys keep the type of their
default: an ``int`` default takes integers only (not ``1.5``, not ``true``), a ``float``
default finite numbers, a ``bool`` default ``true`` / ``false`` (``null`` too: tasks use it
to switch an option off); keys whose default is a string, a list or ``None`` are the task's
to check (``Task.validate_config``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError


@dataclass(frozen=True)
class Rule:
    """What one key accepts. ``kind``: ``int``, ``float``, ``bool``, ``str`` or ``choice``;
    ``low`` / ``high`` are inclusive bounds unless ``open_low`` / ``open_high``."""

    kind: str
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    none: bool = False  # null is allowed
    choices: tuple = ()

    def check(self, key: str, value: Any) -> None:
        """Raise :class:`ConfigError` naming ``key`` when ``value`` is out of the domain."""
        if value is None:
            if not self.none:
                raise ConfigError(f"{key} must be {self.expected()}, got null")
            return
        if self.kind == "choice":
            if not any(value == c and type(value) is type(c) for c in self.choices):
                raise ConfigError(f"{key} must be {self.expected()}, got {value!r}")
            return
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok = {
            "int": number and isinstance(value, int),
            "float": number,
            "bool": isinstance(value, bool),
            "str": isinstance(value, str),
        }[self.kind]
        if ok and number and not math.isfinite(value):
            ok = False
        if ok and number:
            low, high = self.low, self.high
            ok = (low is None or (value > low if self.open_low else value >= low)) and (
                high is None or (value < high if self.open_high else value <= high)
            )
        if not ok:
            raise ConfigError(f"{key} must be {self.expected()}, got {value!r}")

    def expected(self) -> str:
        if self.kind == "choice":
            shown = [_show(c) for c in self.choices]
            return " or ".join(shown) if len(shown) == 2 else "one of " + ", ".join(shown)
        noun = {"int": "integer", "float": "number"}.get(self.kind)
        if noun is None:
            return "true or false" if self.kind == "bool" else "a string"
        low, high = self.low, self.high
        if low == 0 and self.open_low and high is None:
            return f"a positive {noun}"
        if low == 1 and high is None and self.kind == "int":
            return "a positive integer"
        if low is not None and high is not None:
            left, right = "(" if self.open_low else "[", ")" if self.open_high else "]"
            return f"a {noun} in {left}{_show(low)}, {_show(high)}{right}"
        if low is not None:
            article = "an" if noun == "integer" else "a"
            return f"{article} {noun} {'>' if self.open_low else '>='} {_show(low)}"
        return "an integer" if self.kind == "int" else "a finite number"


def _show(x: Any) -> str:
    if isinstance(x, bool):
        return str(x).lower()
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return str(x)


def _int(low: float | None = None, **kw: Any) -> Rule:
    return Rule("int", low, **kw)


def _float(low: float | None = None, high: float | None = None, **kw: Any) -> Rule:
    return Rule("float", low, high, **kw)


BOOL = Rule("bool")
STR = Rule("str")

#: the engine's keys (:data:`dnrt_core.engine.config.ENGINE_DEFAULTS`)
ENGINE_RULES: dict[str, Rule] = {
    "seed": _int(0),
    "deterministic": BOOL,
    "device": STR,
    "data.batch_size": _int(1),
    "data.num_workers": _int(0),
    "mech.arr": BOOL,
    "mech.arr_lambda": _float(0, none=True),  # null: the model family's default (tune)
    "mech.arr_momentum": _float(0, 1, open_low=True),
    "mech.arr_target": Rule("choice", choices=("after", "before")),
    "mech.dpa": BOOL,
    "mech.dpa_lambda": _float(0),
    "mech.dpa_momentum": _float(0, 1, open_low=True),
    "mech.dpa_interval": _int(1),
    "mech.dpa_tau": _float(),
    "train.epochs": _int(1),
    "train.lr": _float(0, open_low=True),
    "train.weight_decay": _float(0),
    "train.wd_all_params": BOOL,
    "train.opt": STR,
    "train.sched": STR,
    "train.warmup_epochs": _int(0),
    "train.sched_lag": Rule("choice", choices=(0, 1)),  # cooldown_epochs: config.py
    "train.warmup_lr": _float(0),
    "train.min_lr": _float(0),
    "train.clip_grad": _float(0, none=True),
    "train.amp": Rule("choice", choices=("auto", True, False)),
    "train.amp_eval": BOOL,
    "train.label_smoothing": _float(0, 1, open_high=True),
    "train.skip_nonfinite": BOOL,
    "train.max_steps_per_epoch": _int(1, none=True),
    "train.stop_after_epoch": _int(1, none=True),
    "train.eval_every": _int(1),
    "train.select_metric": Rule("str", none=True),
    "train.patience": _int(1, none=True),
    "train.tensorboard": BOOL,
}


def rule_from_default(default: Any) -> Rule | None:
    """The rule a task key takes from its default value (``None``: the task checks it).
    ``null`` stays allowed: tasks use it to switch an option off (``data.crop_pct: null``)."""
    if isinstance(default, bool):
        return Rule("bool", none=True)
    if isinstance(default, int):
        return Rule("int", none=True)
    if isinstance(default, float):
        return Rule("float", none=True)
    return None


def check_config(flat: dict[str, Any], task_defaults: dict[str, Any] | None = None) -> None:
    """Check every value of a flattened config (``{"train.lr": 0.1, ...}``) against
    :data:`ENGINE_RULES` and, for the task's own keys, the type of ``task_defaults``
    (flattened the same way)."""
    for key, value in flat.items():
        rule = ENGINE_RULES.get(key)
        if rule is None and task_defaults is not None and key in task_defaults:
            rule = rule_from_default(task_defaults[key])
        if rule is not None:
            rule.check(key, value)


#: what ``--resume`` may change: how long to train and where the data and device are
RESUME_KEYS = frozenset(
    {"train.epochs", "train.stop_after_epoch", "data.data_dir", "data.num_workers",
     "data.download", "device"}
)  # fmt: skip


def check_resume_overrides(cfg: dict[str, Any], overrides: dict[str, Any], where: str) -> None:
    """A resumed run keeps its config: an override of another key must equal the saved
    value (``cfg``, nested), else :class:`ConfigError` naming the key and both values."""
    for key, value in overrides.items():
        if key in RESUME_KEYS:
            continue
        node: Any = cfg
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                break  # unknown keys are named by set_key
            node = node[part]
        else:
            if node != value or isinstance(node, bool) != isinstance(value, bool):
                raise ConfigError(
                    f"--resume continues {where} as configured: {key} is {node!r} there, "
                    f"got {value!r}; only train.epochs (and data.data_dir, device) may change "
                    "(start a new run to change it)"
                )
