"""Image classification: digits (embedded), CIFAR-10/100, ImageFolder (ImageNet layout)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dnrt_core.engine import ConfigOption, Task, TaskData
from dnrt_core.engine.data import DROP_LAST, check_val_fraction, make_loader, stratified_split
from dnrt_core.errors import unknown_name_error
from tasks.common.vision import (
    CIFAR_MEAN,
    CIFAR_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ArrayImageDataset,
    DataError,
    build_transform,
    cifar_num_classes,
    cifar_stats,
    load_cifar,
    load_digits_images,
    read_image,
)

from .models import available_models, create_image_model

DATASETS = ("digits", "cifar10", "cifar100", "imagefolder")
INTERPOLATIONS = ("random", "bilinear", "bicubic", "nearest")


def _subset(labels: np.ndarray, n: int | None, seed: int) -> np.ndarray | None:
    """Sorted indices of a seeded, class-stratified subset of ``n`` samples (``None``: all)."""
    if n is None or n >= len(labels):
        return None
    from sklearn.model_selection import train_test_split

    idx, _ = train_test_split(
        np.arange(len(labels)), train_size=int(n), random_state=seed, stratify=labels
    )
    return np.sort(idx)


class ImageTask(Task):
    name = "image"
    description = "image classification (digits, CIFAR-10/100, ImageFolder) with timm/CNN models"
    primary_metric = "top1"
    # CIFAR has no official validation split; as in the papers, selection uses the test set
    # unless ``data.val_fraction`` carves a validation split from the training set
    select_split = "test"
    report_split = "test"
    options = (
        ConfigOption("dataset", "data.dataset", str, f"Dataset: {', '.join(DATASETS)}."),
        ConfigOption("model", "model.name", str, f"Model: {', '.join(available_models())}."),
        ConfigOption("img_size", "data.img_size", int, "Input size in pixels."),
        ConfigOption("weak_aug", "data.weak_aug", bool, "Flip + normalise only (no RandAugment)."),
        ConfigOption(
            "download", "data.download", bool, "Download CIFAR if missing (needs internet)."
        ),
    )

    def default_config(self) -> dict[str, Any]:
        # the defaults are the first run (README): DNRT ViT-Tiny on the embedded 8x8 digits
        # shown at 16 px (16 patches) for 6 epochs, >= 90 % test top-1 in about a minute on
        # 2 CPU cores; every recipe in configs/ sets these keys itself
        return {
            "data": {
                "dataset": "digits",
                "batch_size": 32,
                "img_size": 16,
                "train_subset": None,
                "test_subset": None,
                # > 0: hold out this stratified, seeded fraction of the training images
                # (after train_subset) as ``val``; best.pt is then chosen on it, not on test
                "val_fraction": 0.0,
                "weak_aug": False,
                "auto_augment": "rand-m9-mstd0.5-inc1",
                "color_jitter": 0.4,
                "re_prob": 0.25,
                "interpolation": "random",  # of the training crop: random | bilinear | bicubic
                "crop_pct": 0.875,  # evaluation: resize to img_size / crop_pct, centre-crop
                "drop_last": None,  # None: drop a ragged last batch when >= 2; odd: as released
                "download": False,
            },
            "model": {"name": "vit_tiny", "drop_path": 0.1},
            "train": {"epochs": 6, "lr": 1e-3, "warmup_epochs": 0},
        }

    def validate_config(self, cfg: dict[str, Any]) -> None:
        data = cfg["data"]
        if data["dataset"] not in DATASETS:
            raise unknown_name_error("dataset", data["dataset"], list(DATASETS))
        if cfg["model"]["name"] not in available_models():
            raise unknown_name_error("model", cfg["model"]["name"], available_models())
        for key in ("img_size", "train_subset", "test_subset"):
            if data[key] is not None and int(data[key]) <= 0:
                raise ValueError(f"data.{key} must be positive, got {data[key]}")
        crop = data["crop_pct"]
        if crop is not None and (not isinstance(crop, (int, float)) or not 0 < crop <= 1):
            raise ValueError(f"data.crop_pct must be in (0, 1] or null, got {crop!r}")
        if data["interpolation"] not in INTERPOLATIONS:
            raise unknown_name_error("interpolation", data["interpolation"], list(INTERPOLATIONS))
        if data["drop_last"] not in DROP_LAST:
            raise ValueError(f"data.drop_last must be true, false, null or 'odd', "
                             f"got {data['drop_last']!r}")  # fmt: skip
        check_val_fraction(data.get("val_fraction"))
        if data["dataset"] != "digits" and not data.get("data_dir"):
            raise ValueError(f"dataset {data['dataset']!r} needs --data-dir")

    # -- data
    def _arrays(self, cfg: dict[str, Any], train: bool) -> tuple[np.ndarray, np.ndarray, int]:
        data = cfg["data"]
        name = data["dataset"]
        if name == "digits":
            images, labels = load_digits_images(train=train, seed=0, size=int(data["img_size"]))
            return images, labels, 10
        images, labels = load_cifar(data["data_dir"], name, train=train,
                                    download=bool(data["download"]))  # fmt: skip
        return images, labels, cifar_num_classes(name)

    def setup(self, cfg: dict[str, Any], *, device: torch.device) -> TaskData:
        data = cfg["data"]
        seed = int(cfg["seed"])
        size = int(data["img_size"])
        if data["dataset"] == "imagefolder":
            return self._setup_imagefolder(cfg, size, seed)
        train_x, train_y, num_classes = self._arrays(cfg, train=True)
        test_x, test_y, _ = self._arrays(cfg, train=False)
        train_idx = _subset(train_y, data["train_subset"], seed)
        if train_idx is not None:
            train_x, train_y = train_x[train_idx], train_y[train_idx]
        test_idx = _subset(test_y, data["test_subset"], seed)
        if test_idx is not None:
            test_x, test_y = test_x[test_idx], test_y[test_idx]
        val_xy = None
        if data.get("val_fraction"):
            keep, held = stratified_split(train_y, float(data["val_fraction"]), seed)
            val_xy = train_x[held.numpy()], train_y[held.numpy()]
            train_x, train_y = train_x[keep.numpy()], train_y[keep.numpy()]
            base = np.arange(len(keep) + len(held)) if train_idx is None else train_idx
            train_idx = base[keep.numpy()]
        # flips and RandAugment change what a digit is: the embedded digits train un-augmented,
        # on the uncropped evaluation transform
        digits = data["dataset"] == "digits"
        mean, std = (CIFAR_MEAN, CIFAR_STD) if digits else cifar_stats(data["dataset"])
        # .get: a run saved before these keys existed resumes with the behaviour it had
        crop = None if digits else data.get("crop_pct")
        test_tf = build_transform(False, size, mean=mean, std=std, crop_pct=crop)
        train_tf = test_tf if digits else self._train_transform(data, size, mean, std)
        batch = int(data["batch_size"])
        workers = int(data["num_workers"])
        train_set = ArrayImageDataset(train_x, train_y, train_tf)
        test_set = ArrayImageDataset(test_x, test_y, test_tf)
        splits = {"test": make_loader(test_set, batch, train=False, num_workers=workers)}
        info = {"train_size": len(train_set), "test_size": len(test_set)}
        self.select_split = "test"
        if val_xy is not None:
            val_set = ArrayImageDataset(*val_xy, test_tf)
            splits["val"] = make_loader(val_set, batch, train=False, num_workers=workers)
            info["val_size"] = len(val_set)
            self.select_split = "val"
        return TaskData(
            num_classes=num_classes,
            train=self._train_loader(train_set, data, seed),
            splits=splits,
            info=info,
            train_indices=train_idx,
        )

    @staticmethod
    def _train_loader(train_set, data: dict[str, Any], seed: int):
        return make_loader(train_set, int(data["batch_size"]), train=True, seed=seed,
                           num_workers=int(data["num_workers"]),
                           drop_last=data.get("drop_last"))  # fmt: skip

    def _train_transform(self, data: dict[str, Any], size: int, mean, std):
        return build_transform(
            True, size, mean=mean, std=std, weak_aug=bool(data["weak_aug"]),
            auto_augment=data["auto_augment"], color_jitter=float(data["color_jitter"]),
            re_prob=float(data["re_prob"]), interpolation=data.get("interpolation", "bicubic"),
        )  # fmt: skip

    def _setup_imagefolder(self, cfg: dict[str, Any], size: int, seed: int) -> TaskData:
        from torchvision.datasets import ImageFolder

        data = cfg["data"]
        if data.get("val_fraction"):
            raise DataError("data.val_fraction is not supported for imagefolder data")
        root = Path(data["data_dir"]).expanduser()
        folders = {}
        for split, names in (("train", ("train",)), ("test", ("val", "test"))):
            found = next((root / n for n in names if (root / n).is_dir()), None)
            if found is None:
                raise DataError(f"imagefolder needs {root}/{names[0]}/<class>/<images>")
            folders[split] = found
        train_tf = self._train_transform(data, size, IMAGENET_MEAN, IMAGENET_STD)
        test_tf = build_transform(False, size, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                                  crop_pct=data.get("crop_pct"))  # fmt: skip
        train_set = ImageFolder(str(folders["train"]), transform=train_tf, loader=read_image)
        test_set = ImageFolder(str(folders["test"]), transform=test_tf, loader=read_image)
        if train_set.classes != test_set.classes:
            raise DataError(f"{folders['train']} and {folders['test']} hold different classes")
        batch, workers = int(data["batch_size"]), int(data["num_workers"])
        return TaskData(
            num_classes=len(train_set.classes),
            train=self._train_loader(train_set, data, seed),
            splits={"test": make_loader(test_set, batch, train=False, num_workers=workers)},
            info={"train_size": len(train_set), "test_size": len(test_set)},
        )

    # -- model
    def build_model(self, cfg: dict[str, Any], data: TaskData) -> nn.Module:
        return create_image_model(
            cfg["model"]["name"],
            num_classes=data.num_classes,
            img_size=int(cfg["data"]["img_size"]),
            drop_path=float(cfg["model"]["drop_path"]),
        )

    def model_names(self) -> list[str]:
        return available_models()

    def create_model(self, name: str, num_classes: int, **options: Any) -> nn.Module:
        """``options``: ``img_size``, ``drop_path``, ``in_chans`` (:func:`create_image_model`)."""
        return create_image_model(name, num_classes=num_classes, **options)

    def summary_extra(self, data: TaskData, metrics: dict[str, float]) -> dict[str, Any]:
        return dict(data.info)
