"""Node-classification metrics: ROC-AUC and AP (scikit-learn), Rec@K, top-1 accuracy, loss."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from dnrt_core.engine.metrics import binary_auc_ap


def multiclass_auc_ap(probs: np.ndarray, labels: np.ndarray, num_classes: int) -> dict[str, float]:
    """Macro one-vs-rest ROC-AUC and macro AP over the classes present; NaN if < 2 classes."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    present = np.unique(labels)
    if len(present) < 2:
        return {"auc": math.nan, "ap": math.nan}
    onehot = labels[:, None] == np.arange(num_classes)[None, :]
    aucs = [roc_auc_score(onehot[:, k], probs[:, k]) for k in present]
    aps = [average_precision_score(onehot[:, k], probs[:, k]) for k in present]
    return {"auc": float(np.mean(aucs)), "ap": float(np.mean(aps))}


def recall_at_k(scores: np.ndarray, labels: np.ndarray) -> float:
    """Rec@K with K = the number of positives: the share of positives among the K
    highest-scored nodes (GADBench's RecK; equal to precision at K). NaN without positives.

    ``scores`` and ``labels`` (0/1) are ``(n,)``; ties at the cut are broken by index."""
    k = int(labels.sum())
    if k == 0:
        return math.nan
    top = np.argsort(-scores, kind="stable")[:k]
    return float(labels[top].sum()) / k


def node_metrics(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict[str, float]:
    """Metrics of ``logits`` ``(n, K)`` against ``labels`` ``(n,)`` (all in ``0 .. K-1``).

    Returns ``auc`` and ``ap`` (binary: of the class-1 probability, i.e. fraud vs normal;
    multi-class: macro one-vs-rest), for binary data ``reck`` (:func:`recall_at_k`),
    ``top1`` (percent) and the cross-entropy ``loss``.
    """
    logits = logits.detach().float().cpu()
    labels = labels.detach().long().cpu()
    if labels.numel() == 0:
        nan = math.nan
        empty = {"auc": nan, "ap": nan, "top1": nan, "loss": nan}
        return {**empty, "reck": nan} if num_classes == 2 else empty
    probs = logits.softmax(dim=1)
    if num_classes == 2:
        scores = binary_auc_ap(probs[:, 1].numpy(), labels.numpy())
        scores["reck"] = recall_at_k(probs[:, 1].numpy(), labels.numpy())
    else:
        scores = multiclass_auc_ap(probs.numpy(), labels.numpy(), num_classes)
    return {
        **scores,
        "top1": 100.0 * float((logits.argmax(dim=1) == labels).float().mean()),
        "loss": float(F.cross_entropy(logits, labels)),
    }
