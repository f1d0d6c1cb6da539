"""The task plugin interface.

A task tells the engine how to get data, build a model and score it; the
engine does everything else (tuning, optimiser, schedule, AMP, checkpoints,
logging, DDP). Tasks are found through the ``dnrt.tasks`` entry-point group.

A minimal classification task only implements :meth:`Task.default_config`,
:meth:`Task.setup` and :meth:`Task.build_model`; the defaults of the other
hooks do supervised classification with cross-entropy and top-1/top-5.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .config import ConfigOption, with_option_keys
from .metrics import evaluate_classification


@dataclass
class TaskData:
    """What :meth:`Task.setup` returns.

    Attributes:
        num_classes: K, also the size of the ARR/DPA class memories.
        train: the training loader (an iterable of batches).
        splits: evaluation loaders by split name (``val``, ``test``, ...).
        info: anything the task wants in ``summary.json`` (e.g. ``class_counts``).
        state: task-private objects (graphs, tensors).
        train_indices: when training on a subset, its indices (N,) into the full training
            set; ``summary.json`` then records ``data.train_indices_sha256``.
    """

    num_classes: int
    train: Iterable
    splits: dict[str, Iterable] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    train_indices: Any = None


class Task:
    """Base class of task plugins. Subclass it (or a built-in task) and declare an
    entry point in the ``dnrt.tasks`` group to make ``dnrt train <name>`` work."""

    #: registry name (``dnrt train <name>``)
    name: ClassVar[str] = ""
    #: one line for ``dnrt tasks``
    description: ClassVar[str] = ""
    #: metric used to pick ``best.pt`` (higher is better) and printed at the end
    primary_metric: ClassVar[str] = "top1"
    #: split used for model selection, and the split reported as final
    select_split: ClassVar[str] = "val"
    report_split: ClassVar[str] = "test"
    #: the task's own command-line options, each one config key (``dnrt train <name> --help``);
    #: an option named like a shared one (``model``, ``dataset``) replaces its help text
    options: ClassVar[tuple[ConfigOption, ...]] = ()

    def default_config(self) -> dict[str, Any]:
        """Task defaults: at least ``data`` and ``model`` sections, optionally
        ``train``/``mech`` overrides of the engine defaults."""
        raise NotImplementedError

    def config_defaults(self) -> dict[str, Any]:
        """:meth:`default_config` plus the keys that only :attr:`options` declare."""
        return with_option_keys(self.default_config(), self.options)

    def validate_config(self, cfg: dict[str, Any]) -> None:
        """Raise ``ValueError`` with a one-line message for bad values (unknown dataset...)."""

    def setup(self, cfg: dict[str, Any], *, device: torch.device) -> TaskData:
        raise NotImplementedError

    def build_model(self, cfg: dict[str, Any], data: TaskData) -> nn.Module:
        raise NotImplementedError

    def model_names(self) -> list[str]:
        """Model names :meth:`create_model` builds (``dnrt profile`` lists them)."""
        return []

    def create_model(self, name: str, num_classes: int, **options: Any) -> nn.Module:
        """A stock model by name, outside a run (``dnrt profile``); tasks with a model zoo
        override it together with :meth:`model_names`."""
        raise NotImplementedError(f"task {self.name!r} builds no models by name")

    def tune_options(self, cfg: dict[str, Any], data: TaskData) -> dict[str, Any]:
        """Extra keyword arguments for :func:`dnrt_core.tune` (e.g. explicit ARR sites)."""
        return {}

    def example_inputs(self, data: TaskData, device: torch.device) -> tuple:
        """Inputs for one no-grad forward that sizes lazy parameters (default: 1st train batch)."""
        batch = next(iter(self.train_batches(data, epoch=0)))
        inputs, _ = self.batch_inputs(batch, device)
        return inputs

    def train_batches(self, data: TaskData, epoch: int) -> Iterable:
        sampler = getattr(data.train, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        return data.train

    def batch_inputs(self, batch: Any, device: torch.device) -> tuple[tuple, torch.Tensor]:
        """-> (model positional inputs, targets). Default: ``(images, labels)`` batches."""
        x, y = batch
        return (x.to(device, non_blocking=True),), y.to(device, non_blocking=True)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor, data: TaskData) -> torch.Tensor:
        """Cross-entropy; ignores label -1; ``train.label_smoothing`` via ``data.state``."""
        smoothing = float(data.state.get("label_smoothing", 0.0))
        return F.cross_entropy(outputs, targets, ignore_index=-1, label_smoothing=smoothing)

    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, data: TaskData, split: str, device: torch.device
    ) -> dict[str, float]:
        """Metrics of ``model`` on ``split``; default: loss, top-1, top-5 of its loader."""
        return evaluate_classification(
            model, data.splits[split], lambda b: self.batch_inputs(b, device), data.num_classes
        )

    def summary_extra(self, data: TaskData, metrics: dict[str, float]) -> dict[str, Any]:
        """Extra keys for ``summary.json``."""
        return dict(data.info)

    def format_report(self, metrics: dict[str, float]) -> str:
        """The line(s) printed at the end of a run / by ``dnrt eval``."""
        parts = []
        for key in ("top1", "top5", "auc", "ap", "loss"):
            value = metrics.get(key)
            if isinstance(value, (int, float)):
                parts.append(
                    f"{key}={value:.2f}" if key.startswith("top") else f"{key}={value:.4f}"
                )
        return "  ".join(parts)
