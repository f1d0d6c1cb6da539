"""Long-tailed data: the exponential profile, subset selection, shot groups, re-sampling.

CIFAR-10-LT / CIFAR-100-LT (Cao et al. 2019; Cui et al. 2019): from the balanced
training set, class i keeps n_i = floor(n_max · beta^(-i/(C-1))) images; the
test set stays balanced. Which images: by default exactly the ones LDAM-DRW's
``IMBALANCECIFAR10/100`` keep (``rand_number`` 0), the split most long-tail papers
use. ``digits-lt`` applies the same profile to scikit-learn's embedded digits
(n_max = the smallest per-class training count).
"""

from __future__ import annotations

import numpy as np
import torch

from tasks.common.vision import (
    DataError,
    cifar_num_classes,
    imbalance_counts,
    load_cifar,
    load_digits_images,
)

DATASETS = ("digits-lt", "cifar10-lt", "cifar100-lt")
SELECTIONS = ("ldam", "seeded", "first")
SAMPLERS = ("none", "class-balanced", "sqrt")
#: training images per class: many-shot > 100, medium 20-100, few-shot < 20
MANY_THRESHOLD, FEW_THRESHOLD = 100, 20
SHOT_GROUPS = ("many", "medium", "few")


def longtail_profile(n_max: int, num_classes: int, beta: float) -> list[int]:
    """Per-class counts n_i = floor(n_max · beta^(-i/(C-1))), i = 0..C-1 (class 0 is the head)."""
    if n_max < 1:
        raise ValueError(f"n_max must be >= 1, got {n_max}")
    return imbalance_counts(n_max, num_classes, float(beta))


def select_longtail(labels: np.ndarray, counts: list[int], *, selection: str = "ldam",
                    seed: int = 0) -> np.ndarray:  # fmt: skip
    """Indices (sorted, into ``labels`` (N,)) keeping ``counts[k]`` images of class k.

    ``ldam`` is LDAM-DRW's draw (``imbalance_cifar.py``) with ``rand_number = seed``: one
    legacy NumPy generator seeded once, then for each class in class order its indices (file
    order) are shuffled in place and the first ``counts[k]`` kept; ``seeded`` draws each class
    without replacement from ``np.random.default_rng(seed)``; ``first`` keeps the first images
    of each class in file order.
    """
    if selection not in SELECTIONS:
        raise ValueError(f"unknown selection {selection!r}; valid: {', '.join(SELECTIONS)}")
    labels = np.asarray(labels)
    legacy = np.random.RandomState(seed)  # the generator behind np.random.seed / shuffle
    rng = np.random.default_rng(seed)
    keep = []
    for k, n in enumerate(counts):
        idx = np.flatnonzero(labels == k)
        if len(idx) < n:
            raise DataError(f"class {k} has {len(idx)} training images, the profile needs {n}")
        if selection == "ldam":
            legacy.shuffle(idx)
            keep.append(idx[:n])
        elif selection == "seeded":
            keep.append(rng.choice(idx, size=n, replace=False))
        else:
            keep.append(idx[:n])
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)


def scale_counts(counts: list[int], total: int) -> list[int]:
    """Shrink a profile to about ``total`` images (proportionally, at least 1 per class)."""
    factor = min(1.0, total / max(sum(counts), 1))
    return [max(1, int(np.floor(n * factor))) for n in counts]


def balanced_subset(labels: np.ndarray, total: int, num_classes: int) -> np.ndarray:
    """Indices of the first ``ceil(total / K)`` images of every class (a smaller balanced set)."""
    per_class = -(-total // num_classes)
    labels = np.asarray(labels)
    return np.sort(np.concatenate([np.flatnonzero(labels == k)[:per_class]
                                   for k in range(num_classes)]))  # fmt: skip


def shot_group(count: int) -> str:
    """``many`` (> 100 training images), ``medium`` (20-100) or ``few`` (< 20)."""
    if count > MANY_THRESHOLD:
        return "many"
    return "medium" if count >= FEW_THRESHOLD else "few"


def shot_groups(class_counts: list[int]) -> dict[str, list[int]]:
    """Class indices of each shot group, e.g. ``{"many": [0, 1], "medium": [2], "few": [3]}``."""
    groups: dict[str, list[int]] = {g: [] for g in SHOT_GROUPS}
    for k, n in enumerate(class_counts):
        groups[shot_group(int(n))].append(k)
    return groups


def group_accuracy(per_class: list[float], class_counts: list[int]) -> dict[str, float]:
    """Mean per-class accuracy of the many/medium/few groups (empty groups are left out)."""
    out = {}
    for group, classes in shot_groups(class_counts).items():
        values = [per_class[k] for k in classes if not np.isnan(per_class[k])]
        if values:
            out[group] = float(np.mean(values))
    return out


def sampling_weights(labels: np.ndarray, mode: str = "class-balanced") -> torch.Tensor | None:
    """Per-sample weights (N,) for re-sampling with replacement.

    ``class-balanced``: every class is drawn equally often (weight 1/n_k);
    ``sqrt``: class k is drawn in proportion to sqrt(n_k); ``none``: ``None`` (plain shuffle).
    """
    if mode not in SAMPLERS:
        raise ValueError(f"unknown sampler {mode!r}; valid: {', '.join(SAMPLERS)}")
    if mode == "none":
        return None
    labels = np.asarray(labels)
    counts = np.bincount(labels).astype(np.float64)
    per_class = 1.0 / counts if mode == "class-balanced" else 1.0 / np.sqrt(counts)
    per_class[~np.isfinite(per_class)] = 0.0
    return torch.as_tensor(per_class[labels], dtype=torch.double)


def load_base(dataset: str, data_dir: str | None, *, train: bool, download: bool = False,
              img_size: int = 32) -> tuple[np.ndarray, np.ndarray, int]:  # fmt: skip
    """The balanced source set: images (N, H, W, 3) uint8, labels (N,), number of classes."""
    if dataset == "digits-lt":
        images, labels = load_digits_images(train=train, size=img_size)
        return images, labels, 10
    if dataset in ("cifar10-lt", "cifar100-lt"):
        name = dataset[: -len("-lt")]
        if data_dir is None:
            raise DataError(f"{dataset} needs --data-dir (the folder that holds the pickles)")
        try:
            images, labels = load_cifar(data_dir, name, train=train, download=download)
        except (OSError, RuntimeError) as exc:  # a failed download (offline, bad URL)
            raise DataError(
                f"cannot download {name} into {data_dir}: {str(exc).splitlines()[0]}; "
                "pass --data-dir to a folder that holds the pickles"
            ) from None
        return images, labels, cifar_num_classes(name)
    raise DataError(f"unknown long-tail dataset {dataset!r}; valid: {', '.join(DATASETS)}")


def default_n_max(labels: np.ndarray, num_classes: int) -> int:
    """The smallest per-class count of the balanced set (5000 CIFAR-10, 500 CIFAR-100)."""
    counts = np.bincount(np.asarray(labels), minlength=num_classes)
    return int(counts.min())
