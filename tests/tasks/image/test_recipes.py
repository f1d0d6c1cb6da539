"""The paper configs key by key against the released recipes (DNRT and DPA repositories, both
QTClassification: ``configs/_base_.py``, ``configs/dnrt.py`` / ``configs/dpa.py``,
``main.py``, ``qtcls/datasets/__init__.py``), and what the image task builds from them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from timm.data import create_transform

from dnrt_core.engine import resolve_config
from dnrt_core.engine.config import ConfigError
from dnrt_core.engine.optim import cooldown_epochs
from tasks.image import ImageTask
from tests.tasks.common.fake_cifar import write_cifar

REPO = Path(__file__).resolve().parents[3]
PAPER_CONFIGS = sorted(REPO.glob("configs/image_*.yaml"))
CPU = torch.device("cpu")

# The released values, written out (config key -> value). lr = 0.0005 * batch_size / 512.
RELEASED = {
    "seed": 42,
    "train.epochs": 300,
    "data.batch_size": 256,
    "train.lr": 0.0005 * 256 / 512,
    "train.opt": "adamw",
    "train.weight_decay": 0.05,
    "train.wd_all_params": True,  # main.py: one param group of every trainable tensor
    "train.sched": "cosine",
    "train.warmup_epochs": 20,
    "train.warmup_lr": 1e-6,
    "train.min_lr": 1e-5,
    "train.cooldown_epochs": "warmup",  # t_initial = total - warm-up steps
    "train.sched_lag": 1,  # step_update(epoch * n_steps + batch_idx) after the update
    "train.clip_grad": 1.0,
    "train.amp": "auto",  # amp = True, switched off on CPU as main.py does
    "train.amp_eval": True,  # evaluate() runs under autocast(enabled=amp) as well
    "model.drop_path": 0.1,
    "data.auto_augment": "rand-m9-mstd0.5-inc1",
    "data.color_jitter": 0.4,
    "data.re_prob": 0.25,
    "data.interpolation": "random",
    "data.crop_pct": 0.875,
    "data.drop_last": "odd",  # drop_last=bool(len(dataset) % 2 or batch_size % 2)
    "data.weak_aug": False,
}
RELEASED_LAMBDA = {"cifar10": 10.0, "cifar100": 20.0}  # arr_loss_coef (dnrt.py)
RELEASED_DPA_COEF = {"cifar10": 1.0, "cifar100": 5.0}  # channel_loss_coef (dpa.py)
RELEASED_IMG_SIZE = {"cifar10": 32, "cifar100": 32, "imagefolder": 224}


def _get(cfg: dict, dotted: str):
    for part in dotted.split("."):
        cfg = cfg[part]
    return cfg


@pytest.mark.parametrize("path", PAPER_CONFIGS, ids=lambda p: p.stem)
def test_paper_config_is_the_released_recipe(path):
    cfg = resolve_config(ImageTask(), config_file=path)
    for key, value in RELEASED.items():
        assert _get(cfg, key) == value, key
    dataset = cfg["data"]["dataset"]
    assert cfg["data"]["img_size"] == RELEASED_IMG_SIZE[dataset]
    assert cfg["mech"]["act"] == "raa" and cfg["mech"]["arr"] is True
    if dataset in RELEASED_LAMBDA:
        assert cfg["mech"]["arr_lambda"] == RELEASED_LAMBDA[dataset]
        assert cfg["mech"]["dpa_lambda"] == RELEASED_DPA_COEF[dataset]


def test_paper_config_with_a_short_budget():
    """As released, the held epochs follow the warm-up: no warm-up, no hold."""
    path = REPO / "configs" / "image_cifar10_vit_tiny_dnrt.yaml"
    cfg = resolve_config(ImageTask(), {"train.epochs": 2, "train.warmup_epochs": 0}, path)
    assert cooldown_epochs(cfg["train"]) == 0
    with pytest.raises(ConfigError, match="must be < train.epochs"):
        resolve_config(ImageTask(), {"train.epochs": 2}, path)


def test_all_paper_configs_are_checked():
    assert len(PAPER_CONFIGS) == 30


@pytest.fixture(scope="module")
def cifar100_paper(tmp_path_factory):
    """ImageTask.setup of the CIFAR-100 ViT-Tiny paper config on a generated CIFAR-100
    (6 train images per class: 600, an even size, so no batch is dropped)."""
    root = write_cifar(tmp_path_factory.mktemp("c100"), "cifar100", per_class_train=6)
    path = REPO / "configs" / "image_cifar100_vit_tiny_dnrt.yaml"
    cfg = resolve_config(ImageTask(), {"data.data_dir": str(root), "data.download": False,
                                       "data.num_workers": 0}, path)  # fmt: skip
    return ImageTask().setup(cfg, device=CPU)


def test_paper_cifar100_transforms_are_the_released_ones(cifar100_paper):
    stats = {"mean": (0.5071, 0.4865, 0.4409), "std": (0.2673, 0.2564, 0.2762)}
    train_tf = cifar100_paper.train.dataset.transform
    released_train = create_transform(
        input_size=32, is_training=True, use_prefetcher=False, no_aug=False, scale=(0.08, 1.0),
        ratio=(3.0 / 4.0, 4.0 / 3.0), hflip=0.5, vflip=0.0, color_jitter=0.4,
        auto_augment="rand-m9-mstd0.5-inc1", interpolation="random", re_prob=0.25,
        re_mode="pixel", re_count=1, re_num_splits=0, separate=False, **stats,
    )  # fmt: skip
    assert repr(train_tf) == repr(released_train)
    test_tf = cifar100_paper.splits["test"].dataset.transform
    released_eval = create_transform(input_size=32, is_training=False, use_prefetcher=False,
                                     no_aug=False, crop_pct=0.875, interpolation="bilinear",
                                     **stats)  # fmt: skip
    assert repr(test_tf) == repr(released_eval)
    assert "size=36" in repr(test_tf) and "CenterCrop(size=(32, 32))" in repr(test_tf)


def test_paper_loader_keeps_the_last_batch(cifar100_paper):
    assert len(cifar100_paper.train.dataset) == 600
    assert len(cifar100_paper.train) == 3  # ceil(600 / 256); the default would drop to 2
    assert cifar100_paper.train.drop_last is False


def test_digits_demo_keeps_its_transform():
    cfg = resolve_config(ImageTask(), {"data.train_subset": 20, "data.test_subset": 10})
    data = ImageTask().setup(cfg, device=CPU)
    assert "CenterCrop" not in repr(data.splits["test"].dataset.transform)
    assert data.train.dataset.transform is data.splits["test"].dataset.transform


@pytest.mark.parametrize(("key", "value"), [("data.crop_pct", 1.5), ("data.interpolation", "x"),
                                            ("data.drop_last", "even")])  # fmt: skip
def test_bad_recipe_values_are_one_line_errors(key, value):
    with pytest.raises(ConfigError):
        resolve_config(ImageTask(), {key: value})


def test_config_saved_before_the_recipe_keys_keeps_its_behaviour(tmp_path):
    """A resumed run's saved config may lack the new keys: it gets what it trained with."""
    root = write_cifar(tmp_path, "cifar10", per_class_train=4)
    cfg = resolve_config(ImageTask(), {"data.dataset": "cifar10", "data.data_dir": str(root),
                                       "data.batch_size": 16})  # fmt: skip
    for key in ("crop_pct", "interpolation", "drop_last"):
        del cfg["data"][key]
    data = ImageTask().setup(cfg, device=CPU)
    assert "CenterCrop" not in repr(data.splits["test"].dataset.transform)
    assert "bicubic" in repr(data.train.dataset.transform.transforms[0]).lower()
    assert len(data.train) == 40 // 16  # a ragged last batch is dropped, as before
