"""Metrics shared by the tasks: top-k, per-class accuracy, ROC-AUC / AP."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def topk_correct(logits: torch.Tensor, targets: torch.Tensor, ks: tuple[int, ...] = (1, 5)):
    """Number of samples whose target is in the top-k logits, for each k (capped at K)."""
    maxk = min(max(ks), logits.shape[1])
    pred = logits.topk(maxk, dim=1).indices
    hit = pred == targets[:, None]
    return [int(hit[:, : min(k, maxk)].any(dim=1).sum()) for k in ks]


@torch.no_grad()
def collect_predictions(
    model: nn.Module, loader: Iterable, to_inputs: Callable[[Any], tuple[tuple, torch.Tensor]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``model`` over ``loader``; return (logits (N, K) float32, targets (N,)) on CPU.
    Evaluation loaders are not sharded, so every DDP rank scores the whole split. A model
    whose ``counts_eval_targets`` is true (DPA, as released) also gets the labels."""
    was_training = model.training
    model.eval()
    with_targets = bool(getattr(model, "counts_eval_targets", False))
    logits, targets = [], []
    try:
        for batch in loader:
            inputs, y = to_inputs(batch)
            out = model(*inputs, targets=y) if with_targets else model(*inputs)
            logits.append(out.float())
            targets.append(y)
    finally:
        model.train(was_training)
    return torch.cat(logits).cpu(), torch.cat(targets).cpu()


def classification_metrics(logits: torch.Tensor, targets: torch.Tensor, num_classes: int) -> dict:
    """loss, top1, top5 (percent) and per-class accuracy list (percent, NaN for absent classes)."""
    top1, top5 = topk_correct(logits, targets)
    n = max(targets.numel(), 1)
    correct = logits.argmax(1) == targets
    counts = torch.bincount(targets, minlength=num_classes).float()
    hits = torch.bincount(targets[correct], minlength=num_classes).float()
    per_class = torch.where(counts > 0, 100.0 * hits / counts.clamp(min=1), float("nan"))
    return {
        "loss": float(F.cross_entropy(logits, targets)) if targets.numel() else float("nan"),
        "top1": 100.0 * top1 / n,
        "top5": 100.0 * top5 / n,
        "per_class": [round(float(v), 4) for v in per_class],
    }


def collapsed_class(per_class: Any, threshold: float = 1.0) -> int | None:
    """The one class a collapsed classifier still gets right, or None.

    ``per_class`` is per-class accuracy in percent (NaN = class absent). A split is called
    collapsed when it has at least 3 classes present and every class but one is below
    ``threshold`` percent: the model predicts (almost) one class whatever the input, as a
    network that outputs the class prior does.
    """
    if not isinstance(per_class, (list, tuple)):
        return None
    present = [(k, float(v)) for k, v in enumerate(per_class) if not math.isnan(float(v))]
    if len(present) < 3:
        return None
    above = [k for k, v in present if v >= threshold]
    return above[0] if len(above) == 1 else None


def evaluate_classification(model, loader, to_inputs, num_classes: int) -> dict:
    logits, targets = collect_predictions(model, loader, to_inputs)
    return classification_metrics(logits, targets, num_classes)


def binary_auc_ap(scores: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor) -> dict:
    """ROC-AUC and average precision (scikit-learn) of positive-class scores; NaN if one class."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    scores = np.asarray(scores.detach().cpu() if torch.is_tensor(scores) else scores, dtype=float)
    labels = np.asarray(labels.detach().cpu() if torch.is_tensor(labels) else labels)
    if len(np.unique(labels)) < 2:
        return {"auc": float("nan"), "ap": float("nan")}
    return {
        "auc": float(roc_auc_score(labels, scores)),
        "ap": float(average_precision_score(labels, scores)),
    }


def lower_is_better(metric: str) -> bool:
    """Whether a smaller value of ``metric`` is better (losses and error rates)."""
    m = metric.lower()
    return "loss" in m or "err" in m
