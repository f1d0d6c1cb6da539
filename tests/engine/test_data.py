"""Loader helpers: drop_last settings and the training-subset hash written to summary.json."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from dnrt_core.engine.data import indices_sha256, make_loader


@pytest.mark.parametrize(("setting", "n", "batches"), [(None, 600, 2), (False, 600, 3),
                                                       ("odd", 600, 3), ("odd", 601, 2),
                                                       (True, 600, 2), (None, 300, 2)])  # fmt: skip
def test_drop_last_settings(setting, n, batches):
    """odd: the released rule drop_last = bool(len(dataset) % 2 or batch_size % 2)."""
    loader = make_loader(torch.utils.data.TensorDataset(torch.zeros(n)), 256, train=True,
                         drop_last=setting)  # fmt: skip
    assert len(loader) == batches


def test_drop_last_odd_batch_size():
    loader = make_loader(torch.utils.data.TensorDataset(torch.zeros(600)), 255, train=True,
                         drop_last="odd")  # fmt: skip
    assert len(loader) == 2


def test_bad_drop_last():
    with pytest.raises(ValueError, match="drop_last"):
        make_loader(torch.utils.data.TensorDataset(torch.zeros(4)), 2, train=True, drop_last="x")


def test_indices_sha256_is_sorted_int64_little_endian():
    expected = hashlib.sha256(bytes.fromhex("0100000000000000" "0200000000000000"
                                            "0a00000000000000")).hexdigest()  # fmt: skip
    assert indices_sha256([10, 2, 1]) == expected
    assert indices_sha256(np.array([2, 10, 1], dtype=np.int32)) == expected
    assert indices_sha256(torch.tensor([1, 2, 10])) == expected
    assert indices_sha256([1, 2, 11]) != expected
