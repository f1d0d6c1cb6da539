"""The training / evaluation loop shared by all tasks.

``run(task, overrides)`` resolves the config, builds data and model through the
task plugin, applies ``tune`` (RAA / ARR / DPA), trains with timm's optimiser
and scheduler factories, and writes to the output folder:

    config.yaml     the resolved config
    metrics.jsonl   one JSON line per epoch
    last.pt         the full training state after the latest epoch (atomic)
    best.pt         the same state at the best validation epoch (atomic)
    summary.json    final and best metrics, time, parameter count, how it was launched
    tb/             TensorBoard curves (``train.tensorboard: true``)

``--resume`` restores model, optimiser, scheduler, AMP scaler, RNG states,
response memories and epoch, so 1 + 1 epochs equal 2 epochs exactly on CPU
with ``deterministic: true``.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import random
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ..errors import (
    ENVIRONMENT_ERRNOS,
    DataError,
    EnvironmentFailure,
    NonFiniteLossError,
    RunError,
    RunInterrupted,
)
from ..mechanisms.distributed import is_distributed, is_main_process, world_size
from ..mechanisms.names import is_dpa, mechanism_name
from ..tuning import Tuned, tune
from . import checkpoint as ckpt_io
from .config import ConfigError, build_config, dump_yaml, get, load_yaml, set_key, validate
from .data import indices_sha256
from .data_checks import check_task_data
from .diagnostics import Diagnostics
from .metrics import collapsed_class, lower_is_better
from .optim import build_optimizer, build_scheduler, scheduler_index
from .plugins import load_task
from .run_dir import RunDir, check_out_arg
from .schema import check_resume_overrides
from .task import Task, TaskData

# --------------------------------------------------------------------------- helpers


def set_seed(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RunError(f"device {name!r} requested but CUDA is not available")
        if is_distributed() and name == "cuda":
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise RunError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise RunError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise RunError(f"device {name!r} requested but MPS is not available")
    return device


def init_distributed(device_name: str) -> None:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return
    use_cuda = torch.cuda.is_available() and device_name != "cpu"
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend=backend)


def default_out_dir(cfg: dict[str, Any]) -> Path:
    name = "-".join(
        str(p)
        for p in (get(cfg, "data.dataset"), get(cfg, "model.name"), mechanism_name(cfg["mech"]))
        if p
    )
    return Path("runs") / str(cfg["task"]) / f"{name}-s{cfg['seed']}"


def autocast_for(tcfg: dict[str, Any], device: torch.device, *, evaluation: bool = False):
    """float16 autocast when AMP is on (``train.amp`` true/auto on CUDA); for evaluation only
    with ``train.amp_eval`` (the released loop evaluates under AMP too)."""
    on = device.type == "cuda" and tcfg["amp"] in (True, "auto")
    if evaluation:
        on = on and bool(tcfg.get("amp_eval", False))
    return torch.autocast("cuda", dtype=torch.float16) if on else contextlib.nullcontext()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _finite(value: Any) -> Any:
    """JSON-safe copy: NaN/Inf -> None, recursively through dicts and lists."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}


def _ranges(values: list[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2,5"``."""
    parts: list[list[int]] = []
    for v in values:
        if parts and parts[-1][1] == v - 1:
            parts[-1][1] = v
        else:
            parts.append([v, v])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in parts)


def launch_record(device: torch.device, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """How a run was started (``summary.json`` ``launch``): the launcher (``inline``,
    ``torchrun``, or the one named in ``extra``), host, pid, device, visible GPUs, intra-op
    threads, CPU cores and the Slurm job id if any. Keys in ``extra`` win."""
    job = os.environ.get("SLURM_JOB_ID")
    if os.environ.get("SLURM_ARRAY_JOB_ID"):
        job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}"
    try:
        cores: str | None = _ranges(sorted(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        cores = None
    record = {
        "launcher": "torchrun" if is_distributed() else "inline",
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "device": str(device),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "threads": torch.get_num_threads(),
        "cores": cores,
        "job_id": job,
    }
    return {**record, **(extra or {})}


# --------------------------------------------------------------------------- building


@dataclass
class Built:
    task: Task
    cfg: dict[str, Any]
    data: TaskData
    model: Tuned
    device: torch.device


def build_tuned_model(task: Task, cfg: dict[str, Any], data: TaskData) -> Tuned:
    mech = cfg["mech"]
    act = mech.get("act")
    arr = None
    if mech.get("arr"):
        arr = {
            "sites": mech.get("arr_sites"),
            "placement": mech.get("arr_placement"),
            "pool": mech.get("arr_pool"),
            "arr_lambda": None if mech.get("arr_lambda") is None else float(mech["arr_lambda"]),
            "momentum": float(mech["arr_momentum"]),
            "target": mech.get("arr_target", "after"),
        }
    dpa = None
    if mech.get("dpa") or is_dpa(act):
        dpa = {
            "sites": mech.get("dpa_sites"),
            "dpa_lambda": float(mech["dpa_lambda"]),
            "momentum": float(mech["dpa_momentum"]),
            "interval": int(mech["dpa_interval"]),
            "tau": float(mech["dpa_tau"]),
            "count_eval": bool(mech.get("dpa_count_eval", True)),
        }  # tune() itself maps act="dpa" to TAU at the non-DPA sites
    model = task.build_model(cfg, data)
    options = dict(task.tune_options(cfg, data))
    return tune(model, act=act, arr=arr, dpa=dpa, num_classes=data.num_classes, **options)


def build(task: Task | str, cfg: dict[str, Any], device: torch.device | None = None) -> Built:
    """Data + tuned, materialized model on ``device`` for a resolved config."""
    task = load_task(task) if isinstance(task, str) else task
    device = device or resolve_device(cfg["device"])
    data = task.setup(cfg, device=device)
    check_task_data(data, where=f"{task.name} data {get(cfg, 'data.dataset')}")
    data.state.setdefault("label_smoothing", float(get(cfg, "train.label_smoothing", 0.0) or 0.0))
    try:
        model = build_tuned_model(task, cfg, data)
    except (ValueError, TypeError) as exc:
        raise RunError(str(exc).splitlines()[0]) from None
    model.to(device)
    model.materialize(*task.example_inputs(data, device))
    model.to(device)  # parameters created lazily during materialize follow their input
    return Built(task, cfg, data, model, device)


def resolve_config(
    task: Task,
    overrides: dict[str, Any] | None = None,
    config_file: str | Path | None = None,
) -> dict[str, Any]:
    file_cfg = load_yaml(config_file) if config_file else {}
    if file_cfg.get("task") not in (None, task.name):
        raise ConfigError(
            f"config file {config_file} is for task {file_cfg['task']!r}, not {task.name!r}"
        )
    cfg = build_config(task.config_defaults(), file_cfg, overrides)
    cfg["task"] = task.name
    try:
        task.validate_config(cfg)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return cfg


# --------------------------------------------------------------------------- training


class Trainer:
    """One run: owns the model, optimiser, scheduler, scaler and the output folder."""

    def __init__(self, built: Built, out: Path, *, quiet: bool = False):
        self.built = built
        self.cfg = built.cfg
        self.out = out
        self.quiet = quiet or not is_main_process()
        tcfg = self.cfg["train"]
        self.epochs = int(tcfg["epochs"])
        self.steps_per_epoch = self._steps_per_epoch()
        self.model = built.model
        self.optimizer = build_optimizer(self.model, tcfg)
        self.scheduler = build_scheduler(self.optimizer, tcfg, self.steps_per_epoch)
        amp = tcfg["amp"]
        self.use_amp = built.device.type == "cuda" and amp in (True, "auto")
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.ddp_model: nn.Module = self.model
        if is_distributed():
            ids = [built.device.index] if built.device.type == "cuda" else None
            self.ddp_model = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.epoch = 0  # completed epochs
        self.best_value: float | None = None
        self.select_metric = str(tcfg.get("select_metric") or built.task.primary_metric)
        self.bad_evals = 0  # evaluations since the last improvement (train.patience)
        self.collapsed_evals = 0  # evaluations in a row that predict one class
        self.stopped_early = False
        self.best: dict[str, Any] = {}
        self.train_time = 0.0
        self.skipped_steps = 0
        self.saved_epoch: int | None = None  # the epoch last.pt holds (None: not written yet)
        self.on_checkpoint = None  # called with the epoch after every last.pt
        self.writer = None
        if tcfg.get("tensorboard") and is_main_process():
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out / "tb"))

    def _steps_per_epoch(self) -> int:
        loader = self.built.task.train_batches(self.built.data, 0)
        try:
            n = len(loader)  # type: ignore[arg-type]
        except TypeError:
            n = sum(1 for _ in loader)
        cap = self.cfg["train"].get("max_steps_per_epoch")
        if n == 0:
            raise RunError("the training set yields no batch (is it smaller than the batch size?)")
        return min(n, int(cap)) if cap else n

    # -- state
    def state(self) -> dict[str, Any]:
        return {
            "format": ckpt_io.CHECKPOINT_FORMAT,
            "task": self.built.task.name,
            "num_classes": self.built.data.num_classes,
            "config": self.cfg,
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler else {},
            "scaler": self.scaler.state_dict(),
            "rng": ckpt_io.rng_state(),
            "best_value": self.best_value,
            "best": self.best,
            "bad_evals": self.bad_evals,
            "stopped_early": self.stopped_early,
            "train_time": self.train_time,
            "skipped_steps": self.skipped_steps,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        check_compatible(state, self.built.task, self.built.data.num_classes)
        ckpt_io.load_model_state(self.model, state["model"], self.out / "last.pt")
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and int(state["config"]["train"]["epochs"]) == self.epochs:
            # timm schedulers are functions of the step; their state also fixes the length,
            # so a resume that extends train.epochs keeps the fresh, longer schedule
            self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        ckpt_io.set_rng_state(state["rng"])
        self.epoch = int(state["epoch"])
        self.best_value = state["best_value"]
        self.best = state["best"]
        self.bad_evals = int(state.get("bad_evals", 0))
        self.stopped_early = bool(state.get("stopped_early", False))
        self.train_time = float(state["train_time"])
        self.skipped_steps = int(state.get("skipped_steps", 0))
        self.saved_epoch = self.epoch

    # -- loop
    def train_epoch(self, progress) -> dict[str, float]:
        task, data, device = self.built.task, self.built.data, self.built.device
        self.model.train()
        clip = float(self.cfg["train"]["clip_grad"] or 0.0)
        total = aux_total = 0.0
        seen = 0
        bar = progress.add_task(f"epoch {self.epoch + 1}/{self.epochs}", total=self.steps_per_epoch)
        for step, batch in enumerate(task.train_batches(data, self.epoch)):
            if step >= self.steps_per_epoch:
                break
            inputs, targets = task.batch_inputs(batch, device)
            self._check_targets(targets, step)
            with autocast_for(self.cfg["train"], device):
                out = self.ddp_model(*inputs, targets=targets)
                task_loss = task.loss(out, targets, data)
                aux = self.model.aux_loss()
                loss = task_loss + aux
            if not torch.isfinite(loss):
                if self.cfg["train"]["skip_nonfinite"]:
                    self.skipped_steps += 1
                    self.optimizer.zero_grad(set_to_none=True)
                    progress.advance(bar)
                    continue
                kept = (
                    f"{self.out / 'last.pt'} keeps epoch {self.saved_epoch}"
                    if self.saved_epoch is not None
                    else "no checkpoint had been written yet"
                )
                raise NonFiniteLossError(
                    f"loss is {float(loss.detach())} at epoch {self.epoch + 1} step {step + 1}; "
                    f"stopped, {kept} (use --skip-nonfinite to skip such batches)"
                )
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if clip > 0:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.scheduler is not None:  # sched "none" keeps the lr constant
                done = self.epoch * self.steps_per_epoch + step + 1
                self.scheduler.step_update(scheduler_index(self.cfg["train"], done))
            total += float(task_loss.detach())
            aux_total += float(aux.detach())
            seen += 1
            progress.advance(bar)
        progress.remove_task(bar)
        if self.scheduler is not None:
            self.scheduler.step(self.epoch + 1)
        n = max(seen, 1)
        return {"train_loss": total / n, "train_aux_loss": aux_total / n}

    def _check_targets(self, targets: torch.Tensor, step: int) -> None:
        """Integer labels must lie in [-1, K) (-1 = ignored)."""
        if targets.is_floating_point() or targets.numel() == 0:
            return
        low, high = int(targets.min()), int(targets.max())
        k = self.built.data.num_classes
        if low < -1 or high >= k:
            bad = high if high >= k else low
            raise DataError(
                f"label {bad} out of range for {k} classes "
                f"(epoch {self.epoch + 1}, step {step + 1}); labels must be in 0..{k - 1}"
            )

    def evaluate(self, split: str) -> dict[str, Any]:
        if split not in self.built.data.splits:
            return {}
        with autocast_for(self.cfg["train"], self.built.device, evaluation=True):
            return self.built.task.evaluate(self.model, self.built.data, split, self.built.device)

    def fit(self) -> dict[str, Any]:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,  # fmt: skip
            TimeRemainingColumn,
        )

        task = self.built.task
        metric = self.select_metric
        patience = self.cfg["train"].get("patience")
        select = (
            task.select_split if task.select_split in self.built.data.splits else task.report_split
        )
        progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TimeRemainingColumn(), disable=self.quiet, transient=True,
        )  # fmt: skip
        last_eval: dict[str, Any] = {}
        diag = Diagnostics(self) if self.cfg["train"].get("diagnostics") else None
        with progress:
            stop_after = self.cfg["train"].get("stop_after_epoch")
            while self.epoch < self.epochs and not self.stopped_early:
                if stop_after is not None and self.epoch >= int(stop_after):
                    break
                start = time.perf_counter()
                record = self.train_epoch(progress)
                self.train_time += time.perf_counter() - start
                self.epoch += 1
                record = {"epoch": self.epoch, "lr": self.optimizer.param_groups[0]["lr"], **record}
                if diag is not None:
                    record.update(diag.measure())
                improved = False
                every = int(self.cfg["train"]["eval_every"])
                if self.epoch % every == 0 or self.epoch == self.epochs:
                    with diag.watch_predictions(select) if diag else contextlib.nullcontext():
                        val = self.evaluate(select)
                    test = val if select == task.report_split else self.evaluate(task.report_split)
                    last_eval = {"val": val, "test": test}
                    record.update({f"val_{k}": v for k, v in _scalars(val).items()})
                    record.update({f"test_{k}": v for k, v in _scalars(test).items()})
                    if metric not in val:
                        raise RunError(
                            f"train.select_metric {metric!r} is not a metric of the {select} "
                            f"split; valid: {', '.join(sorted(_scalars(val)))}"
                        )
                    self._check_collapse(val, select)
                    improved = is_improvement(val[metric], self.best_value, metric)
                    self.bad_evals = 0 if improved else self.bad_evals + 1
                    if patience is not None and self.bad_evals >= int(patience):
                        self.stopped_early = True
                    if improved:
                        self.best_value = float(val[metric])
                        self.best = {
                            "epoch": self.epoch,
                            "val": _finite(val),
                            "test": _finite(test),
                        }
                if diag is not None:
                    record.update(diag.pop_histogram())
                record["epoch_time"] = time.perf_counter() - start
                self._save(record, improved)
                if not self.quiet:
                    # name the split that was scored (CIFAR selects on its test set)
                    shown = {k: v for k, v in record.items() if k.startswith("train_")}
                    shown.update(
                        {f"{select}_{k[4:]}": v for k, v in record.items() if k.startswith("val_")}
                    )
                    text = "  ".join(
                        f"{k}={v:.4g}" for k, v in shown.items() if isinstance(v, float)
                    )
                    print(f"epoch {self.epoch}/{self.epochs}  {text}", flush=True)
                    if self.stopped_early:
                        print(f"early stop: no better val {metric} in {patience} evaluations")
        return last_eval

    def _check_collapse(self, metrics: dict[str, Any], split: str) -> None:
        """Warn once (stderr) when two evaluations in a row predict one class."""
        cls = collapsed_class(metrics.get("per_class"))
        self.collapsed_evals = self.collapsed_evals + 1 if cls is not None else 0
        if self.collapsed_evals != 2 or not is_main_process():
            return
        message = (
            f"warning: epoch {self.epoch}: the model predicts one class on the {split} split "
            f"(only class {cls} is above 1 % accuracy) for 2 evaluations in a row"
        )
        tcfg = self.cfg["train"]
        if self.cfg["mech"].get("act") == "raa" and not int(tcfg.get("warmup_epochs") or 0):
            message += (
                f"; RAA with {tcfg['opt']} at lr {float(tcfg['lr']):g} and no warm-up does "
                "this when its weights blow up (docs/results.md, 'Bigger budget, CNNs'): "
                "set train.warmup_epochs, e.g. 5"
            )
        print(message, file=sys.stderr, flush=True)

    def _save(self, record: dict[str, Any], improved: bool) -> None:
        if not is_main_process():
            return
        with open(self.out / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(_finite(record)) + "\n")
        if self.writer is not None:
            for k, v in record.items():
                if k != "epoch" and isinstance(v, (int, float)):
                    self.writer.add_scalar(k.replace("_", "/", 1), v, self.epoch)
            self.writer.flush()
        state = self.state()
        if improved:
            ckpt_io.save_atomic(state, self.out / "best.pt")
        ckpt_io.save_atomic(state, self.out / "last.pt")
        self.saved_epoch = self.epoch
        if self.on_checkpoint is not None:
            self.on_checkpoint(self.epoch)


def is_improvement(value: Any, best: float | None, metric: str) -> bool:
    """Whether ``value`` beats ``best`` (None = no best yet); lower is better for losses."""
    if value is None or not math.isfinite(value):
        return False
    if best is None:
        return True
    return value < best if lower_is_better(metric) else value > best


def memories_in_sync(model: Tuned) -> bool:
    """True when every DDP rank holds bit-identical ARR/DPA memories (trivially on one process)."""
    if not is_distributed():
        return True
    tensors = [t.detach().double().flatten() for t in model.memory_state().values()]
    mine = torch.cat(tensors) if tensors else torch.zeros(1, dtype=torch.float64)
    mine = mine.to(next(model.parameters()).device)
    gathered = [torch.empty_like(mine) for _ in range(world_size())]
    dist.all_gather(gathered, mine)
    return all(torch.equal(g, gathered[0]) for g in gathered)


def check_compatible(state: dict[str, Any], task: Task, num_classes: int) -> None:
    if state.get("task") != task.name:
        raise ckpt_io.CheckpointError(
            f"checkpoint is from task {state.get('task')!r}, not {task.name!r}"
        )
    if int(state.get("num_classes", -1)) != num_classes:
        raise ckpt_io.CheckpointError(
            f"checkpoint has {state.get('num_classes')} classes, the data has {num_classes}"
        )


def _launch_rank() -> int:
    """This process's rank, known before the process group exists (torchrun sets RANK)."""
    return int(os.environ.get("RANK", "0")) if not dist.is_initialized() else dist.get_rank()


def _resume_config(
    task: Task, folder: RunDir, overrides: dict[str, Any]
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """``(state, config)`` to continue the run in ``folder``: from ``last.pt``, or, for a run
    killed before its first checkpoint, a restart from its ``config.yaml`` (state None).
    Only the epoch count (and where the data / device are) may change."""
    last, saved = folder.path / "last.pt", folder.path / "config.yaml"
    if last.is_file():
        state = ckpt_io.load(last)
        if state.get("task") != task.name:
            raise ckpt_io.CheckpointError(
                f"{last} is from task {state.get('task')!r}, not {task.name!r}"
            )
        cfg = copy.deepcopy(state["config"])
        cfg["train"]["stop_after_epoch"] = None  # each invocation stops on its own terms
        check_resume_overrides(cfg, overrides, where=str(last))
        for key, value in overrides.items():  # e.g. more epochs, a moved --data-dir
            set_key(cfg, key, value)
        validate(cfg, task.default_config())
        done = int(state["epoch"])
        if int(cfg["train"]["epochs"]) < done:
            raise RunError(
                f"{last} has trained {done} epochs; --epochs {cfg['train']['epochs']} would "
                f"not continue it (give at least {done})"
            )
        return state, cfg
    if saved.is_file():
        file_cfg = load_yaml(saved)
        if file_cfg.get("task") not in (None, task.name):
            raise ConfigError(f"{saved} is for task {file_cfg['task']!r}, not {task.name!r}")
        resolved = resolve_config(task, {}, saved)
        check_resume_overrides(resolved, overrides, where=str(saved))
        cfg = resolve_config(task, {"train.stop_after_epoch": None, **overrides}, saved)
        print(f"{folder.path}: no checkpoint yet; restarting the run from its config.yaml",
              file=sys.stderr, flush=True)  # fmt: skip
        return None, cfg
    raise RunError(f"nothing to resume: {last} does not exist")


def run(
    task: Task | str,
    overrides: dict[str, Any] | None = None,
    out: str | Path | None = None,
    *,
    config_file: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    quiet: bool = False,
    launch: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train a task end to end; returns the summary (written to ``summary.json``) and
    ``run_dir``, the run folder.

    ``overrides`` uses dotted keys, e.g. ``{"data.dataset": "cifar10", "train.epochs": 1}``.
    With ``resume=True`` the run in ``out`` continues from ``last.pt`` with its saved config
    (``overrides`` may then only change ``train.epochs``, ``data.data_dir`` and ``device``).
    The folder is locked for the run and repaired on start (:mod:`.run_dir`); a run that
    fails before its first checkpoint leaves it as it was. ``launch`` (e.g. the launcher
    and job id) is added to the ``launch`` record of the summary (see :func:`launch_record`).
    """
    task = load_task(task) if isinstance(task, str) else task
    overrides = dict(overrides or {})
    check_out_arg(out)
    if resume and out is None:
        raise RunError("--resume needs --out pointing at the run folder")
    cfg = None if resume else resolve_config(task, overrides, config_file)
    folder = RunDir(
        Path(out) if out is not None else default_out_dir(cfg), main=_launch_rank() == 0
    )
    try:
        for note in folder.acquire():
            print(f"{folder.path}: {note}", file=sys.stderr, flush=True)
        summary = _run_locked(task, folder, cfg, overrides, resume, overwrite, quiet, launch)
    except BaseException as exc:
        folder.close(failed=True)
        if isinstance(exc, KeyboardInterrupt):
            raise RunInterrupted(folder.interrupted_message()) from None
        if isinstance(exc, OSError) and exc.errno in ENVIRONMENT_ERRNOS:
            where = exc.filename or folder.path
            raise EnvironmentFailure(
                f"{exc.strerror} while writing {where}; {folder.state_note()}"
            ) from None
        raise
    folder.close()
    return summary


def _run_locked(
    task: Task,
    folder: RunDir,
    cfg: dict[str, Any] | None,
    overrides: dict[str, Any],
    resume: bool,
    overwrite: bool,
    quiet: bool,
    launch: dict[str, Any] | None = None,
) -> dict[str, Any]:
    state = None
    if resume:
        state, cfg = _resume_config(task, folder, overrides)
    assert cfg is not None
    out_dir = folder.path
    init_distributed(str(cfg["device"]))
    set_seed(int(cfg["seed"]), bool(cfg["deterministic"]))
    built = build(task, cfg)  # bad data or model names fail here, before anything is written
    if state is not None:  # named before any weight is loaded
        check_compatible(state, task, built.data.num_classes)
    folder.begin(resume=state is not None, overwrite=overwrite)
    if is_distributed():
        dist.barrier()
    trainer = Trainer(built, out_dir, quiet=quiet)
    trainer.on_checkpoint = folder.checkpoint_written
    if state is not None:
        trainer.load_state(state)
        folder.checkpoint_epoch = trainer.epoch
        if folder.trim_metrics(trainer.epoch) and not trainer.quiet:
            print(f"{out_dir / 'metrics.jsonl'}: dropped lines after epoch {trainer.epoch}",
                  file=sys.stderr, flush=True)  # fmt: skip
    elif is_main_process():
        dump_yaml(cfg, out_dir / "config.yaml")
    if not trainer.quiet:
        print(f"{task.name}: {cfg['data'].get('dataset')} / {cfg['model'].get('name')} / "
              f"{mechanism_name(cfg['mech'])}  ->  {out_dir}", flush=True)  # fmt: skip
        print(str(built.model.report), flush=True)
    last_eval = trainer.fit()
    if trainer.epoch < trainer.epochs and not trainer.stopped_early:  # stop_after_epoch
        if not trainer.quiet:
            print(f"stopped after epoch {trainer.epoch}; continue with --resume --out {out_dir}")
        return {"stopped_at_epoch": trainer.epoch, "out": str(out_dir)}
    if not last_eval:  # resumed a finished run: score the final model again
        last_eval = {"test": trainer.evaluate(task.report_split)}
    final = _finite(last_eval.get("test", {}))
    summary = {
        "task": task.name,
        "dataset": cfg["data"].get("dataset"),
        "model": cfg["model"].get("name"),
        "mechanism": mechanism_name(cfg["mech"]),
        "act": cfg["mech"].get("act"),
        "arr": bool(cfg["mech"].get("arr")),
        "arr_placement": built.model.report.arr_placement or "none",
        "arr_lambda": float(built.model.arr_spec.arr_lambda) if built.model.arr_spec else 0.0,
        "dpa": bool(cfg["mech"].get("dpa")) or is_dpa(cfg["mech"].get("act")),
        "seed": cfg["seed"],
        "epochs": trainer.epoch,
        "primary_metric": task.primary_metric,
        "select_metric": trainer.select_metric,
        "stopped_early": trainer.stopped_early,
        "final": final,
        "best": trainer.best,
        "train_time_s": round(trainer.train_time, 3),
        "params": count_parameters(built.model),
        "world_size": world_size(),
        "memories_in_sync": memories_in_sync(built.model),
        "skipped_steps": trainer.skipped_steps,
        **task.summary_extra(built.data, final),
        "launch": launch_record(built.device, launch),
    }
    if built.data.train_indices is not None:
        summary["data"] = {"train_indices_sha256": indices_sha256(built.data.train_indices)}
    if is_main_process():
        ckpt_io.write_text_atomic(json.dumps(summary, indent=2) + "\n", out_dir / "summary.json")
        if not trainer.quiet:
            print(f"final ({task.report_split}): {task.format_report(final)}", flush=True)
    if trainer.writer is not None:
        trainer.writer.close()
    if is_distributed():
        dist.barrier()
    return {**summary, "run_dir": str(out_dir)}


# --------------------------------------------------------------------------- evaluation


def load_run(
    checkpoint: str | Path,
    *,
    data_dir: str | None = None,
    device: str = "auto",
    task: Task | None = None,
) -> tuple[Built, dict[str, Any]]:
    """Rebuild the task, data and tuned model of a checkpoint and load its weights and memories.

    ``task`` defaults to the registered plugin named in the checkpoint."""
    state = ckpt_io.load(checkpoint)
    task = task or load_task(str(state.get("task")))
    cfg = state["config"]
    if data_dir is not None:
        cfg["data"]["data_dir"] = data_dir
    cfg["device"] = device
    set_seed(int(cfg["seed"]), False)
    built = build(task, cfg)
    check_compatible(state, task, built.data.num_classes)
    ckpt_io.load_model_state(built.model, state["model"], checkpoint)
    return built, state


def evaluate_checkpoint(
    checkpoint: str | Path,
    *,
    data_dir: str | None = None,
    split: str | None = None,
    device: str = "auto",
    task: Task | None = None,
) -> tuple[Task, dict[str, Any]]:
    """Metrics of a saved run on ``split`` (default: the task's report split)."""
    built, _ = load_run(checkpoint, data_dir=data_dir, device=device, task=task)
    split = split or built.task.report_split
    if split not in built.data.splits:
        raise RunError(f"unknown split {split!r}; valid: {', '.join(built.data.splits)}")
    with autocast_for(built.cfg["train"], built.device, evaluation=True):
        return built.task, built.task.evaluate(built.model, built.data, split, built.device)
