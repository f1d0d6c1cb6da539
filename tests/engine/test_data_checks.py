"""The data checks every task can use, and the generic one the engine runs at load."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from dnrt_core.engine.data import make_loader
from dnrt_core.engine.data_checks import (
    check_classes,
    check_finite,
    check_labels,
    check_splits,
    check_task_data,
    integral_ids,
)
from dnrt_core.engine.task import TaskData
from dnrt_core.errors import DataError


def test_labels():
    check_labels([0, 1, 2], 3, "d")
    check_labels(np.array([0.0, 2.0]), 3, "d")  # integral floats are fine
    check_labels([0, -1], 3, "d", ignore=-1)
    with pytest.raises(DataError, match="d: label 3 at index 1 is out of range for 3 classes"):
        check_labels([0, 3], 3, "d")
    with pytest.raises(DataError, match="label -1 at index 0"):
        check_labels([-1, 0], 3, "d")
    with pytest.raises(DataError, match="label 0.5 at index 1 is not an integer"):
        check_labels([0, 0.5], 3, "d")
    with pytest.raises(DataError, match="label nan at index 0 is not an integer"):
        check_labels([float("nan")], 3, "d")
    with pytest.raises(DataError, match="labels must be integers, got dtype <U1"):
        check_labels(["a"], 3, "d")


def test_ids_finite_splits_classes():
    assert integral_ids(np.array([[0.0, 1.0]]), "e").dtype == np.int64
    with pytest.raises(DataError, match="e: id 1.5 at flat index 1"):
        integral_ids(np.array([0.0, 1.5]), "e")
    check_finite(torch.zeros(2, 2), "x")
    with pytest.raises(
        DataError, match=r"x: 2 non-finite value\(s\), the first an Inf at index \(0, 1\)"
    ):
        check_finite(torch.tensor([[0.0, float("inf")], [float("nan"), 1.0]]), "x")
    check_splits({"train": [0, 1], "val": [2], "test": [3]}, "g")
    with pytest.raises(DataError, match="g: the val split is empty"):
        check_splits({"train": [0], "val": [], "test": [1]}, "g")
    with pytest.raises(DataError, match=r"the train and test splits share 1 sample\(s\)"):
        check_splits({"train": [0, 1], "val": [2], "test": [1]}, "g")
    check_classes([0, 1, 1], range(2), "val", "AUC", "g")
    with pytest.raises(DataError, match=r"the val split has no sample of class 1 \(AUC\)"):
        check_classes([0, 0], range(2), "val", "AUC", "g")


def _data(train_y, test_y, k=3):
    loader = lambda y: make_loader(TensorDataset(torch.zeros(len(y), 2), y), 4, train=False)  # noqa: E731
    return TaskData(num_classes=k, train=loader(train_y), splits={"test": loader(test_y)})


def test_task_data_scanned_at_load():
    check_task_data(_data(torch.tensor([0, 1, -1]), torch.tensor([2, 1])))  # -1: ignored in train
    with pytest.raises(DataError, match="toy, test split: label -1 at index 0"):
        check_task_data(_data(torch.tensor([0, 1]), torch.tensor([-1, 1])), "toy")
    with pytest.raises(DataError, match="toy, train split: label 3 at index 1"):
        check_task_data(_data(torch.tensor([0, 3]), torch.tensor([0])), "toy")
    with pytest.raises(DataError, match="toy: the test split is empty"):
        check_task_data(_data(torch.tensor([0]), torch.zeros(0, dtype=torch.long)), "toy")
    soft = torch.tensor([[0.2, 0.8, 0.0]])
    check_task_data(_data(soft, soft))  # soft targets are not class ids
