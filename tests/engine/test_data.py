"""Loader helpers: drop_last settings, the training-subset hash written to summary.json, and the
seeded, stratified validation split that image and long-tail tasks carve from training."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from dnrt_core.engine.data import check_val_fraction, indices_sha256, make_loader, stratified_split


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


def _labels() -> torch.Tensor:
    counts = [500, 120, 40, 7, 1]  # long-tailed, with a single-sample class
    return torch.cat([torch.full((n,), k) for k, n in enumerate(counts)])[torch.randperm(668)]


def test_split_is_disjoint_and_complete():
    labels = _labels()
    train, val = stratified_split(labels, 0.2, seed=0)
    assert set(train.tolist()).isdisjoint(val.tolist())
    assert sorted(train.tolist() + val.tolist()) == list(range(len(labels)))
    assert torch.equal(train, train.sort().values) and torch.equal(val, val.sort().values)


def test_split_is_stratified():
    labels = _labels()
    train, val = stratified_split(labels, 0.2, seed=3)
    val_counts = torch.bincount(labels[val], minlength=5).tolist()
    train_counts = torch.bincount(labels[train], minlength=5).tolist()
    assert val_counts == [100, 24, 8, 1, 0]  # round(0.2 · n_k); a lone sample stays in train
    assert train_counts == [400, 96, 32, 6, 1]


def test_split_depends_on_seed_only():
    labels = _labels()
    a = stratified_split(labels, 0.1, seed=1)
    b = stratified_split(labels, 0.1, seed=1)
    c = stratified_split(labels, 0.1, seed=2)
    assert torch.equal(a[1], b[1]) and torch.equal(a[0], b[0])
    assert not torch.equal(a[1], c[1])


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, "x", True])
def test_bad_fractions_are_rejected(bad):
    with pytest.raises(ValueError, match="val_fraction"):
        check_val_fraction(bad)
    check_val_fraction(0.0)
    check_val_fraction(None)
