"""Nested run configuration: engine defaults <- task defaults <- YAML file <- overrides.

Keys are dotted paths (``train.lr``, ``mech.arr``). Only keys that exist in the
engine or task defaults are accepted; an unknown key is an error naming the
closest valid one.
"""

from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from .schema import check_config

ENGINE_DEFAULTS: dict[str, Any] = {
    "task": None,
    "seed": 0,
    "device": "auto",
    "deterministic": False,
    "data": {"dataset": None, "data_dir": None, "batch_size": 128, "num_workers": 0},
    "model": {"name": None},
    "mech": {
        "act": None,  # None keeps the model's own activation
        "arr": False,
        "arr_lambda": None,  # None = the family's default (ViT 10, CNN 1, GNN 0.01; see tune)
        "arr_momentum": 0.1,
        "arr_sites": None,  # globs; None = mech.arr_placement
        "arr_placement": None,  # a named placement (last_stage, every_block, ...); None = default
        "arr_pool": None,
        "arr_target": "after",
        "dpa": False,
        "dpa_lambda": 1.0,
        "dpa_momentum": 0.9,
        "dpa_interval": 5,
        "dpa_tau": 0.0,
        "dpa_sites": None,
        "dpa_count_eval": True,  # labelled eval forwards advance the update counter (released)
    },
    "train": {
        "epochs": 10,
        "lr": 5e-4,
        "weight_decay": 0.05,
        "wd_all_params": False,  # true: one group, every tensor decays (the released code)
        "opt": "adamw",
        "sched": "cosine",
        "warmup_epochs": 0,
        "cooldown_epochs": 0,  # min_lr held for the last N epochs; warmup: N = warmup_epochs
        "sched_lag": 0,  # 1: update k uses the schedule at k - 1 (the released loop)
        "warmup_lr": 1e-6,
        "min_lr": 1e-6,
        "clip_grad": 1.0,
        "amp": "auto",  # auto = on for CUDA, off on CPU
        "amp_eval": False,  # true: evaluate under AMP too (the released loop)
        "label_smoothing": 0.0,
        "skip_nonfinite": False,
        "max_steps_per_epoch": None,
        "stop_after_epoch": None,  # end this invocation early; --resume continues the schedule
        "eval_every": 1,
        "select_metric": None,  # validation metric that picks best.pt; None = the task's
        "patience": None,  # stop after this many evaluations without improvement
        "tensorboard": False,
        "diagnostics": False,  # per-epoch ARR measurements in metrics.jsonl (engine.diagnostics)
    },
}


@dataclass(frozen=True)
class ConfigOption:
    """A command-line option that stands for one config key (``--epochs`` -> ``train.epochs``).

    The engine's shared options and each task's own (:attr:`Task.options`) are declared this
    way; ``dnrt train TASK`` offers both. ``type`` bool makes a switch (``--x`` sets the key
    to true; absent leaves it alone). ``default`` is the key's value when the task's
    ``default_config`` does not hold the key, so a plugin can declare a new key here alone.
    """

    name: str  # Python name; the flag is --name with "_" as "-"
    key: str  # dotted config key
    type: type
    help: str
    default: Any = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def with_option_keys(defaults: dict[str, Any], options) -> dict[str, Any]:
    """``defaults`` plus the key of every option in ``options`` it lacks (at its default)."""
    out = copy.deepcopy(defaults)
    for opt in options:
        if opt.key in flatten(out):
            continue
        node = out
        *parents, last = opt.key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"option {opt.flag}: {part!r} in {opt.key!r} is not a section")
        node[last] = copy.deepcopy(opt.default)
    return out


def flatten(cfg: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in cfg.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Merge ``extra`` into a copy of ``base`` (new keys allowed: used for task defaults)."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def get(cfg: dict[str, Any], dotted: str, default: Any = None) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def set_key(cfg: dict[str, Any], dotted: str, value: Any) -> None:
    """Set an existing key; raise :class:`ConfigError` naming the closest key otherwise."""
    valid = flatten(cfg)
    if dotted not in valid:
        hint = difflib.get_close_matches(dotted, list(valid), n=1, cutoff=0.5)
        msg = f"unknown config key {dotted!r}"
        if hint:
            msg += f" (did you mean {hint[0]!r}?)"
        raise ConfigError(msg)
    parts = dotted.split(".")
    node = cfg
    for part in parts[:-1]:
        node = node[part]
    node[parts[-1]] = value


def parse_value(text: str) -> Any:
    """YAML scalar parsing for ``--set key=value`` (``1e-3`` -> float, ``null`` -> None)."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            return float(value) if any(c in value for c in ".eE") else value
        except ValueError:
            return value
    return value


def parse_set_options(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {item!r}")
        out[key.strip()] = parse_value(value.strip())
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot parse {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of config sections")
    return data


def build_config(
    task_defaults: dict[str, Any],
    file_cfg: dict[str, Any] | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Resolve the full config; every key of the file and of ``overrides`` must exist."""
    cfg = deep_merge(ENGINE_DEFAULTS, task_defaults)
    for key, value in flatten(file_cfg or {}).items():
        if key == "task" or key.split(".")[0] == "trials":  # trials: read by `dnrt compare`
            continue
        set_key(cfg, key, value)
    for key, value in (overrides or {}).items():
        set_key(cfg, key, value)
    validate(cfg, task_defaults)
    return cfg


def validate(cfg: dict[str, Any], task_defaults: dict[str, Any] | None = None) -> None:
    """Every value in its domain with its type (:mod:`.schema`); ``task_defaults`` (the
    task's :meth:`~dnrt_core.engine.task.Task.default_config`) types the task's own keys."""
    check_config(flatten(cfg), flatten(task_defaults) if task_defaults else None)
    _validate_cooldown(cfg)


def _validate_cooldown(cfg: dict[str, Any]) -> None:
    value, epochs = get(cfg, "train.cooldown_epochs"), get(cfg, "train.epochs")
    shown = value
    if value == "warmup":
        value = get(cfg, "train.warmup_epochs") or 0
        shown = f"warmup = train.warmup_epochs = {value}"
    elif value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise ConfigError(
            f"train.cooldown_epochs must be an integer >= 0 or 'warmup', got {value!r}"
        )
    if value and epochs and value >= epochs:
        raise ConfigError(f"train.cooldown_epochs ({shown}) must be < train.epochs ({epochs})")


def dump_yaml(cfg: dict[str, Any], path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg, sort_keys=False))
