"""``dnrt train longtail``: long-tailed CIFAR-10/100 (and embedded digits) classification.

Training sets follow the exponential profile of :mod:`tasks.longtail.data`; the
test set stays balanced. Metrics: top-1/top-5 on the test set, per-class accuracy
and the mean per-class accuracy of the many-shot (> 100 training images),
medium-shot (20-100) and few-shot (< 20) classes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from dnrt_core.engine import ConfigOption, Task, TaskData
from dnrt_core.engine.data import DROP_LAST, check_val_fraction, make_loader, stratified_split
from dnrt_core.engine.metrics import evaluate_classification
from dnrt_core.errors import DataError
from tasks.common.vision import (
    CIFAR_MEAN,
    CIFAR_STD,
    ArrayImageDataset,
    build_transform,
    cifar_stats,
)

from .data import (
    DATASETS,
    SAMPLERS,
    SELECTIONS,
    SHOT_GROUPS,
    balanced_subset,
    default_n_max,
    group_accuracy,
    load_base,
    longtail_profile,
    sampling_weights,
    scale_counts,
    select_longtail,
    shot_group,
    shot_groups,
)
from .models import check_model_name, create_model

AUGS = ("auto", "paper", "crop-flip", "flip", "none")
#: metric keys of the shot groups
GROUP_KEYS = {g: f"{g}_shot" for g in SHOT_GROUPS}


def build_lt_transform(aug: str, train: bool, img_size: int = 32, dataset: str = "cifar10-lt"):
    """PIL -> (3, img_size, img_size) float tensor, normalised.

    ``paper``: the released image recipe (timm RandAugment etc.; evaluation resizes to 36 and
    centre-crops 32; CIFAR-100-LT normalised with CIFAR-100's statistics); ``crop-flip``: the
    standard CIFAR-LT ResNet recipe of LDAM-DRW (random crop with 4-pixel padding + horizontal
    flip, CIFAR-10 statistics for both, as there); ``flip``: flip only; ``none``: resize +
    normalise.
    """
    import torchvision.transforms as T

    if aug == "paper":
        mean, std = cifar_stats(dataset.removesuffix("-lt"))
        return build_transform(train, img_size, mean=mean, std=std,
                               crop_pct=None if train else 0.875)  # fmt: skip
    if not train or aug == "none":
        return build_transform(False, img_size)
    if aug == "flip":
        return build_transform(True, img_size, weak_aug=True)
    if aug == "crop-flip":
        return T.Compose([T.Resize(img_size), T.RandomCrop(img_size, padding=4),
                          T.RandomHorizontalFlip(), T.ToTensor(),
                          T.Normalize(CIFAR_MEAN, CIFAR_STD)])  # fmt: skip
    raise ValueError(f"unknown aug {aug!r}; valid: {', '.join(AUGS)}")


def resolve_selection(data_cfg: dict[str, Any]) -> str:
    """``auto`` = ``ldam`` on CIFAR-LT (the standard split), ``seeded`` on digits-lt."""
    selection = data_cfg.get("selection") or "auto"
    if selection == "auto":
        return "seeded" if data_cfg["dataset"] == "digits-lt" else "ldam"
    return selection


def resolve_aug(data_cfg: dict[str, Any]) -> str:
    """``weak_aug: true`` forces ``flip``; ``auto`` = ``none`` on digits-lt, ``paper`` on CIFAR."""
    if data_cfg.get("weak_aug"):
        return "flip"
    aug = data_cfg.get("aug") or "auto"
    if aug == "auto":
        return "none" if data_cfg["dataset"] == "digits-lt" else "paper"
    return aug


class LongTailTask(Task):
    """Long-tailed classification: ``digits-lt`` (default, embedded), ``cifar10-lt``,
    ``cifar100-lt``; models ``resnet32`` (default) and ``vit_tiny``."""

    name = "longtail"
    description = "long-tailed CIFAR-10/100-LT (and digits-lt): top-1, per-class, many/medium/few"
    primary_metric = "top1"
    # CIFAR-LT convention: no validation set, report on the balanced test; ``data.val_fraction``
    # holds out a stratified part of the LT training set as ``val`` and selects on it by
    # ``balanced_top1`` (the mean per-class accuracy, what top-1 measures on the balanced test)
    select_split = "test"
    report_split = "test"
    options = (
        ConfigOption("dataset", "data.dataset", str, f"Dataset: {', '.join(DATASETS)}."),
        ConfigOption("model", "model.name", str, "Model: resnet32 (or resnet{6n+2}), vit_tiny."),
        ConfigOption("imbalance", "data.imbalance", float, "Imbalance beta = n_max / n_min."),
        ConfigOption("sampler", "data.sampler", str, f"Sampler: {', '.join(SAMPLERS)}."),
        ConfigOption("weak_aug", "data.weak_aug", bool, "Flip only (same as data.aug: flip)."),
        ConfigOption(
            "download", "data.download", bool, "Download CIFAR if missing (needs internet)."
        ),
    )

    def __init__(self) -> None:
        self._class_counts: list[int] | None = None

    def default_config(self) -> dict[str, Any]:
        return {
            "data": {
                "dataset": "digits-lt",
                "imbalance": 100.0,  # beta = n_max / n_min
                "n_max": None,  # None = smallest per-class count (5000 CIFAR-10, 500 CIFAR-100)
                # auto: ldam (LDAM-DRW's split) on CIFAR-LT, seeded on digits-lt; ldam | seeded
                # (default_rng per class) | first (file order)
                "selection": "auto",
                "subset_seed": None,  # None: 0 for ldam (LDAM-DRW's rand_number), else the run's
                "sampler": "none",  # none | class-balanced | sqrt
                "aug": "auto",  # auto | paper | crop-flip | flip | none
                "weak_aug": None,  # true = flip only (same as aug: flip)
                "img_size": 32,
                "train_subset": None,  # shrink the LT train set to about N images (same profile)
                "test_subset": None,  # first ceil(N/K) test images of every class
                "val_fraction": 0.0,  # > 0: stratified, seeded validation split of the LT set
                "download": False,
                "batch_size": 32,
                "drop_last": None,  # None: drop a ragged last batch when >= 2; odd: as released
            },
            # drop_path and depth (None = 12) apply to vit_tiny only
            "model": {"name": "resnet32", "drop_path": 0.1, "depth": None},
            # a quick default (digits-lt in well under a minute); configs/ hold the paper recipes
            "train": {"epochs": 4, "lr": 1e-3, "warmup_epochs": 0},
        }

    def validate_config(self, cfg: dict[str, Any]) -> None:
        d = cfg["data"]
        if not isinstance(d["imbalance"], (int, float)) or d["imbalance"] < 1:
            raise ValueError(f"data.imbalance (beta) must be a number >= 1, got {d['imbalance']!r}")
        choices = (("dataset", DATASETS), ("selection", ("auto", *SELECTIONS)),
                   ("sampler", SAMPLERS), ("aug", AUGS))  # fmt: skip
        for key, valid in choices:
            if d[key] not in valid:
                raise ValueError(f"unknown data.{key} {d[key]!r}; valid: {', '.join(valid)}")
        for key in ("n_max", "train_subset", "test_subset", "img_size"):
            if d[key] is not None and (not isinstance(d[key], int) or d[key] < 1):
                raise ValueError(f"data.{key} must be a positive integer, got {d[key]!r}")
        if d["drop_last"] not in DROP_LAST:
            raise ValueError(f"data.drop_last must be true, false, null or 'odd', "
                             f"got {d['drop_last']!r}")  # fmt: skip
        check_val_fraction(d.get("val_fraction"))
        check_model_name(str(cfg["model"]["name"]))  # fails before any data is read

    # -- data
    def setup(self, cfg: dict[str, Any], *, device: torch.device) -> TaskData:
        d = cfg["data"]
        dataset, size = d["dataset"], int(d["img_size"])
        kw = {"download": bool(d["download"]), "img_size": size}
        images, labels, num_classes = load_base(dataset, d.get("data_dir"), train=True, **kw)
        test_images, test_labels, _ = load_base(dataset, d.get("data_dir"), train=False, **kw)
        n_max = d["n_max"] or default_n_max(labels, num_classes)
        counts = longtail_profile(n_max, num_classes, float(d["imbalance"]))
        if d["train_subset"]:
            counts = scale_counts(counts, int(d["train_subset"]))
        empty = [k for k, n in enumerate(counts) if n < 1]
        if empty:  # e.g. a huge beta: the tail classes would get no training image
            raise DataError(
                f"data.imbalance {d['imbalance']} leaves class(es) {', '.join(map(str, empty))} "
                f"without training images (n_max {n_max}); use a smaller beta"
            )
        selection = resolve_selection(d)
        seed = d["subset_seed"]
        if seed is None:
            seed = 0 if selection == "ldam" else int(cfg.get("seed", 0))
        keep = select_longtail(labels, counts, selection=selection, seed=int(seed))
        images, labels = images[keep], labels[keep]
        val_xy = None
        if d.get("val_fraction"):
            kept, held = stratified_split(labels, float(d["val_fraction"]), int(cfg.get("seed", 0)))
            val_xy = images[held.numpy()], labels[held.numpy()]
            images, labels = images[kept.numpy()], labels[kept.numpy()]
            keep = keep[kept.numpy()]  # the training indices that remain
        if d["test_subset"]:
            idx = balanced_subset(test_labels, int(d["test_subset"]), num_classes)
            test_images, test_labels = test_images[idx], test_labels[idx]

        aug = resolve_aug(d)
        train_set = ArrayImageDataset(images, labels, build_lt_transform(aug, True, size, dataset))
        test_tf = build_lt_transform(aug, False, size, dataset)
        test_set = ArrayImageDataset(test_images, test_labels, test_tf)
        bs, workers, seed = int(d["batch_size"]), int(d["num_workers"]), int(cfg.get("seed", 0))
        train = make_loader(train_set, bs, train=True, seed=seed, num_workers=workers,
                            drop_last=d.get("drop_last"),
                            weights=sampling_weights(labels, d["sampler"]))  # fmt: skip
        test = make_loader(test_set, bs, train=False, seed=seed, num_workers=workers)
        splits = {"test": test}
        self.select_split, self.primary_metric = "test", "top1"
        if val_xy is not None:
            val_set = ArrayImageDataset(*val_xy, test_tf)
            splits["val"] = make_loader(val_set, bs, train=False, seed=seed, num_workers=workers)
            self.select_split, self.primary_metric = "val", "balanced_top1"
        class_counts = np.bincount(labels, minlength=num_classes).tolist()
        self._class_counts = class_counts
        info = {
            "imbalance": float(d["imbalance"]),
            "n_max": int(n_max),
            "selection": selection,
            "subset_seed": int(seed),
            "sampler": d["sampler"],
            "aug": aug,
            "class_counts": class_counts,
            "train_size": int(len(labels)),
            "test_size": int(len(test_labels)),
            **({"val_size": int(len(val_xy[1]))} if val_xy is not None else {}),
            "shot_groups": shot_groups(class_counts),
        }
        return TaskData(num_classes=num_classes, train=train, splits=splits, info=info,
                        state={"class_counts": class_counts}, train_indices=keep)  # fmt: skip

    # -- model
    def build_model(self, cfg: dict[str, Any], data: TaskData) -> nn.Module:
        return create_model(str(cfg["model"]["name"]), data.num_classes, **_model_kwargs(cfg))

    def tune_options(self, cfg: dict[str, Any], data: TaskData) -> dict[str, Any]:
        # explicit family: ARR on ResNet's pooled ``layer3``, on ViT's class tokens of all blocks
        return {"family": "vit" if "vit" in str(cfg["model"]["name"]).lower() else "cnn"}

    # -- metrics
    @torch.no_grad()
    def evaluate(self, model: nn.Module, data: TaskData, split: str,
                 device: torch.device) -> dict[str, Any]:  # fmt: skip
        """loss, top1, top5, per_class (percent), ``balanced_top1`` (their mean over the classes
        present) and ``many_shot``/``medium_shot``/``few_shot`` (the same per group)."""
        metrics = evaluate_classification(
            model, data.splits[split], lambda b: self.batch_inputs(b, device), data.num_classes
        )
        present = [v for v in metrics["per_class"] if not np.isnan(v)]
        metrics["balanced_top1"] = float(np.mean(present)) if present else float("nan")
        groups = group_accuracy(metrics["per_class"], data.state["class_counts"])
        metrics.update({GROUP_KEYS[g]: v for g, v in groups.items()})
        return metrics

    def summary_extra(self, data: TaskData, metrics: dict[str, Any]) -> dict[str, Any]:
        return dict(data.info)

    def format_report(self, metrics: dict[str, Any]) -> str:
        """A summary line, the many/medium/few table and (K <= 20) the per-class table."""
        head = super().format_report(metrics)
        counts = self._class_counts
        per_class = metrics.get("per_class")
        if counts is None or not isinstance(per_class, list) or len(per_class) != len(counts):
            groups = "  ".join(f"{k}={metrics[k]:.2f}" for k in GROUP_KEYS.values() if k in metrics)
            return f"{head}  {groups}".strip()
        return head + "\n" + format_tables(per_class, counts)


def format_tables(per_class: list[float], counts: list[int]) -> str:
    """Text tables: shot groups (classes, train images, accuracy), then classes if K <= 20."""
    lines = [f"{'group':<8}{'classes':>8}{'train':>9}{'top1':>8}"]
    accs = group_accuracy(per_class, counts)
    for group, classes in shot_groups(counts).items():
        acc = f"{accs[group]:8.2f}" if group in accs else f"{'-':>8}"
        n = sum(counts[k] for k in classes)
        lines.append(f"{group:<8}{len(classes):>8}{n:>9}{acc}")
    if len(counts) <= 20:
        lines.append(f"{'class':<8}{'group':>8}{'train':>9}{'top1':>8}")
        for k, (n, acc) in enumerate(zip(counts, per_class, strict=True)):
            lines.append(f"{k:<8}{shot_group(n):>8}{n:>9}{acc:8.2f}")
    return "\n".join(lines)


def _model_kwargs(cfg: dict[str, Any]) -> dict[str, Any]:
    m, name = cfg["model"], str(cfg["model"]["name"]).lower()
    if "vit" not in name:
        return {}
    kwargs: dict[str, Any] = {"img_size": int(cfg["data"]["img_size"]),
                              "drop_path": float(m.get("drop_path") or 0.0)}  # fmt: skip
    if m.get("depth"):
        kwargs["depth"] = int(m["depth"])
    return kwargs
