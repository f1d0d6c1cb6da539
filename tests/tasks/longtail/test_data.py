"""The CIFAR-LT subset is LDAM-DRW's (kaidic/LDAM-DRW ``imbalance_cifar.py``, rand_number 0),
checked against a reimplementation of its draw written here; its SHA-256 reaches summary.json."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from dnrt_core.engine import resolve_config, run
from dnrt_core.engine.data import indices_sha256
from tasks.common.vision import load_cifar
from tasks.longtail import LongTailTask
from tasks.longtail.data import longtail_profile, select_longtail
from tests.tasks.common.fake_cifar import write_cifar

# SHA-256 of LDAM-DRW's CIFAR-10-LT beta=100 training indices (sorted, int64 LE), computed with
# ldam_reference below on the official CIFAR-10 label order
LDAM_C10_B100_SHA256 = "f7669c469c9ddf9afcfabc0b127018ebfa21ac9ecddbe2642455be26c359cb8d"


def ldam_reference(targets, cls_num: int, imb_factor: float, rand_number: int = 0):
    """LDAM-DRW's IMBALANCECIFAR: the global NumPy generator seeded once with rand_number;
    counts int(img_max * imb_factor ** (i / (cls_num - 1))); then for each class of
    np.unique(targets) its np.where indices are np.random.shuffle'd and the first n kept."""
    state = np.random.get_state()
    try:
        np.random.seed(rand_number)
        targets = np.array(targets, dtype=np.int64)
        img_max = len(targets) / cls_num
        nums = [int(img_max * (imb_factor ** (i / (cls_num - 1.0)))) for i in range(cls_num)]
        chosen = []
        for the_class, n in zip(np.unique(targets), nums, strict=True):
            idx = np.where(targets == the_class)[0]
            np.random.shuffle(idx)
            chosen.append(idx[:n])
        return nums, np.concatenate(chosen)
    finally:
        np.random.set_state(state)


def sha256_of(indices) -> str:
    return hashlib.sha256(
        np.sort(np.asarray(indices, dtype=np.int64)).astype("<i8").tobytes()
    ).hexdigest()


@pytest.mark.parametrize(("classes", "per_class", "beta"), [(10, 300, 100), (10, 300, 10),
                                                            (100, 30, 50)])  # fmt: skip
def test_ldam_selection_on_generated_labels(classes, per_class, beta):
    labels = np.random.default_rng(1).permutation(np.repeat(np.arange(classes), per_class))
    nums, reference = ldam_reference(labels, classes, 1 / beta)
    counts = longtail_profile(per_class, classes, beta)
    assert counts == nums
    ours = select_longtail(labels, counts, selection="ldam", seed=0)
    assert np.array_equal(ours, np.sort(reference))
    assert not np.array_equal(ours, select_longtail(labels, counts, selection="ldam", seed=1))
    assert not np.array_equal(ours, select_longtail(labels, counts, selection="seeded", seed=0))


def test_task_default_is_ldam_and_summary_has_the_hash(tmp_path):
    root = write_cifar(tmp_path / "data", "cifar10", per_class_train=60, per_class_test=2)
    labels = load_cifar(root, "cifar10", train=True)[1]
    _, reference = ldam_reference(labels, 10, 1 / 10)
    over = {"data.dataset": "cifar10-lt", "data.data_dir": str(root), "data.imbalance": 10,
            "train.epochs": 1, "train.max_steps_per_epoch": 1, "data.batch_size": 16}  # fmt: skip
    data = LongTailTask().setup(resolve_config(LongTailTask(), over), device="cpu")
    assert data.info["selection"] == "ldam" and data.info["subset_seed"] == 0
    assert np.array_equal(data.train_indices, np.sort(reference))
    summary = run("longtail", {**over, "seed": 3}, tmp_path / "r", quiet=True)
    saved = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert saved["data"]["train_indices_sha256"] == sha256_of(reference)
    assert summary["data"] == saved["data"]  # the run seed does not move the split


def test_digits_lt_keeps_its_seeded_default():
    cfg = resolve_config(LongTailTask(), {"seed": 2})
    data = LongTailTask().setup(cfg, device="cpu")
    assert data.info["selection"] == "seeded" and data.info["subset_seed"] == 2


@pytest.mark.parametrize(("beta", "size"), [(100, 12406), (50, 13996), (10, 20431)])
def test_real_cifar10_lt_is_ldam_split(real_data: Path, beta: int, size: int):
    labels = load_cifar(real_data, "cifar10", train=True)[1]
    _, reference = ldam_reference(labels, 10, 1 / beta)
    over = {"data.dataset": "cifar10-lt", "data.data_dir": str(real_data), "data.imbalance": beta,
            "data.test_subset": 10}  # fmt: skip
    data = LongTailTask().setup(resolve_config(LongTailTask(), over), device="cpu")
    assert data.info["train_size"] == len(data.train_indices) == size
    assert indices_sha256(data.train_indices) == sha256_of(reference)
    if beta == 100:
        assert sha256_of(reference) == LDAM_C10_B100_SHA256
