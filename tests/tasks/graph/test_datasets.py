"""Graph data faults are refused at load, before any training step, naming what and where."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dnrt_core.engine import resolve_config
from dnrt_core.errors import DataError
from tasks.graph.task import GraphTask

N = 300


def _dgraphfin(folder, **changes):
    """A small DGraphFin-layout npz; ``changes`` map a key to a function of the arrays."""
    rng = np.random.default_rng(0)
    perm = rng.permutation(N)
    arrays = {
        "x": rng.normal(size=(N, 17)).astype(np.float32),
        "y": (np.arange(N) % 5 == 0).astype(np.int64),  # 20% fraud, in every split
        "edge_index": rng.integers(0, N, (1200, 2)),
        "train_mask": np.sort(perm[:150]),
        "valid_mask": np.sort(perm[150:225]),
        "test_mask": np.sort(perm[225:]),
    }
    for key, change in changes.items():
        arrays[key] = change(arrays)
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "dgraphfin.npz", **arrays)
    return folder


def _setup(folder):
    task = GraphTask()
    cfg = resolve_config(task, {"data.dataset": "dgraphfin", "data.data_dir": str(folder)})
    return task.setup(cfg, device=torch.device("cpu"))


def _nan_at(value):
    def change(a):
        x = a["x"].copy()
        x[3, 0] = value
        return x

    return change


def _only(cls, split):
    def change(a):
        y = a["y"].copy()
        y[a[split]] = cls
        return y

    return change


FAULTS = {
    "nan features": (
        {"x": _nan_at(np.nan)},
        r"node features: 1 non-finite value\(s\), the first a NaN at index \(3, 0\)",
    ),
    "inf features": ({"x": _nan_at(np.inf)}, "the first an Inf at index"),
    "empty train mask": (
        {"train_mask": lambda a: np.zeros(0, np.int64)},
        "the train split is empty",
    ),
    "val inside train": (
        {"valid_mask": lambda a: a["train_mask"][:50]},
        "the train and val splits share 50",
    ),
    "val equals test": (
        {"valid_mask": lambda a: a["test_mask"]},
        "the val and test splits share 75",
    ),
    "no positives in train": (
        {"y": _only(0, "train_mask")},
        r"the train split has no sample of class 1 \(training needs both\)",
    ),
    "single-class val": (
        {"y": _only(0, "valid_mask")},
        r"the val split has no sample of class 1 \(ROC-AUC needs both classes\)",
    ),
    "fractional labels": (
        {"y": lambda a: a["y"] + 0.25},
        "labels: label 1.25 at index 0 is not an integer",
    ),
    "fractional edge ids": (
        {"edge_index": lambda a: a["edge_index"] + 0.5},
        "edges: id .* is not an integer",
    ),
    "fractional mask ids": (
        {"test_mask": lambda a: a["test_mask"] + 0.5},
        "test_mask: id .* is not an integer",
    ),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_graph_faults_refused_at_load(tmp_path, fault):
    changes, message = FAULTS[fault]
    with pytest.raises(DataError, match=message):
        _setup(_dgraphfin(tmp_path / "g", **changes))


def test_clean_graph_loads(tmp_path):
    data = _setup(_dgraphfin(tmp_path / "g"))
    assert data.num_classes == 2
    assert data.info["split_sizes"] == {"train": 150, "val": 75, "test": 75}
