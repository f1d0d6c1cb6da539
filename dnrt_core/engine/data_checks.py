"""Checks of loaded data, run before any training step: labels integral and in range,
features finite, splits non-empty and disjoint, each split holding the classes its metric
needs. Each raises a one-line :class:`~dnrt_core.errors.DataError` naming what and where."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch

from ..errors import DataError


def _array(values: Any) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def integral_labels(values: Any, where: str) -> np.ndarray:
    """``values`` as int64; fractional, non-finite or non-numeric labels are refused."""
    arr = _array(values)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number):
        raise DataError(f"{where}: labels must be integers, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating):
        bad = ~np.isfinite(arr) | (arr != np.round(arr))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(f"{where}: label {float(arr.flat[i])} at index {i} is not an integer")
    return arr.astype(np.int64)


def integral_ids(values: Any, where: str) -> np.ndarray:
    """Integer ids (edges, node indices) as int64; fractional or non-finite ones are refused."""
    arr = _array(values)
    if np.issubdtype(arr.dtype, np.floating):
        bad = ~np.isfinite(arr) | (arr != np.round(arr))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(f"{where}: id {float(arr.flat[i])} at flat index {i} is not an integer")
    elif arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"{where}: ids must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def check_labels(values: Any, num_classes: int, where: str, *, ignore: int | None = None) -> None:
    """Labels ``(N,)`` must be integers in ``0 .. num_classes-1`` (``ignore`` is also allowed)."""
    arr = integral_labels(values, where).reshape(-1)
    bad = (arr < 0) | (arr >= num_classes)
    if ignore is not None:
        bad &= arr != ignore
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{where}: label {int(arr[i])} at index {i} is out of range for {num_classes} "
            f"classes (labels must be in 0..{num_classes - 1})"
        )


def check_finite(values: Any, where: str) -> None:
    """Every entry of a float array is finite (no NaN / Inf)."""
    arr = _array(values)
    if not np.issubdtype(arr.dtype, np.floating):
        return
    bad = ~np.isfinite(arr)
    if bad.any():
        pos = tuple(int(p) for p in np.unravel_index(int(np.flatnonzero(bad)[0]), arr.shape))
        kind = "a NaN" if np.isnan(arr[pos]) else "an Inf"
        raise DataError(
            f"{where}: {int(bad.sum())} non-finite value(s), the first {kind} at index {pos}"
        )


def check_splits(splits: Mapping[str, Any], where: str) -> None:
    """Index splits ``{name: (n,) indices}`` must be non-empty and pairwise disjoint."""
    arrays = {name: _array(idx).reshape(-1).astype(np.int64) for name, idx in splits.items()}
    for name, idx in arrays.items():
        if idx.size == 0:
            raise DataError(f"{where}: the {name} split is empty")
    names = list(arrays)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            shared = np.intersect1d(arrays[a], arrays[b])
            if shared.size:
                raise DataError(
                    f"{where}: the {a} and {b} splits share {shared.size} sample(s) "
                    f"(the first: {int(shared[0])}); splits must be disjoint"
                )


def check_classes(labels: Any, needed: Iterable[int], split: str, why: str, where: str) -> None:
    """The labels of ``split`` contain every class in ``needed`` (``why``: who needs them)."""
    present = set(np.unique(_array(labels)).tolist())
    missing = [int(k) for k in needed if k not in present]
    if missing:
        names = ", ".join(str(k) for k in missing)
        plural = "es" if len(missing) > 1 else ""
        raise DataError(
            f"{where}: the {split} split has no sample of class{plural} {names} ({why})"
        )


def dataset_labels(loader: Any) -> Any | None:
    """The labels behind a DataLoader when its dataset exposes them (``labels``, ``targets``
    or the last tensor of a ``TensorDataset``); ``None`` otherwise."""
    dataset = getattr(loader, "dataset", None)
    for attr in ("labels", "targets"):
        values = getattr(dataset, attr, None)
        if values is not None and not callable(values):
            return values
    tensors = getattr(dataset, "tensors", None)
    if isinstance(tensors, tuple) and len(tensors) >= 2:
        return tensors[-1]
    return None


def check_task_data(data: Any, where: str = "data") -> None:
    """Generic checks of a task's :class:`~dnrt_core.engine.task.TaskData`: wherever a
    loader's dataset exposes its labels, they are integers in ``0..K-1`` (``-1``, ignored by
    the loss, is allowed in training) and the split is not empty."""
    k = int(data.num_classes)
    if k < 1:
        raise DataError(f"{where}: num_classes must be >= 1, got {k}")
    for split, loader in {"train": data.train, **dict(data.splits)}.items():
        labels = dataset_labels(loader)
        if labels is None:
            continue
        if len(labels) == 0:
            raise DataError(f"{where}: the {split} split is empty")
        if getattr(labels, "ndim", 1) > 1:  # soft / one-hot targets (N, K): not class ids
            continue
        ignore = -1 if loader is data.train else None
        check_labels(labels, k, f"{where}, {split} split", ignore=ignore)
