"""Image data shared by the image-like tasks: embedded digits, CIFAR pickles, transforms.

CIFAR is read from the python-pickle layout directly (no torchvision md5 check,
so re-encoded copies work); ``download=True`` uses torchvision to fetch it first.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from dnrt_core.engine.data_checks import check_labels
from dnrt_core.errors import DataError

# the released code's (QTClassification qtcls/datasets/__init__.py) CIFAR statistics
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_CIFAR_FOLDERS = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"],
                b"labels", 10),
    "cifar100": ("cifar-100-python", ["train"], ["test"], b"fine_labels", 100),
}  # fmt: skip


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            return pickle.load(fh, encoding="bytes")
    except FileNotFoundError:
        raise DataError(f"missing CIFAR file {path}") from None
    except Exception as exc:  # truncated or not a pickle
        raise DataError(f"cannot read CIFAR file {path}: {exc}") from None


def cifar_root(data_dir: str | Path, name: str) -> Path:
    """The folder holding the pickles: ``data_dir`` itself or ``data_dir/<cifar folder>``."""
    folder = _CIFAR_FOLDERS[name][0]
    base = Path(data_dir).expanduser()
    return base if base.name == folder else base / folder


def load_cifar(data_dir: str | Path, name: str = "cifar10", train: bool = True,
               download: bool = False) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Images ``(N, 32, 32, 3)`` uint8 and labels ``(N,)`` int64, in file order."""
    if name not in _CIFAR_FOLDERS:
        raise DataError(f"unknown CIFAR variant {name!r}; valid: {', '.join(_CIFAR_FOLDERS)}")
    folder, train_files, test_files, label_key, num_classes = _CIFAR_FOLDERS[name]
    root = cifar_root(data_dir, name)
    if download and not root.is_dir():
        import torchvision

        cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
        cls(str(Path(data_dir).expanduser()), train=train, download=True)
    if not root.is_dir():
        raise DataError(
            f"{name} not found: expected folder {root} (torchvision layout); "
            f"pass --data-dir to the folder that contains {folder}/"
        )
    images, labels = [], []
    for fname in train_files if train else test_files:
        entry = _unpickle(root / fname)
        if b"data" not in entry or label_key not in entry:
            raise DataError(f"{root / fname} lacks the keys 'data' and {label_key.decode()!r}")
        data, file_labels = np.asarray(entry[b"data"]), np.asarray(entry[label_key])
        if data.size % 3072 or data.size // 3072 != len(file_labels):
            raise DataError(
                f"{root / fname}: {data.size} pixel values for {len(file_labels)} labels "
                "(CIFAR stores 3072 per image)"
            )
        check_labels(file_labels, num_classes, str(root / fname))  # integral, in 0..K-1
        images.append(data.astype(np.uint8).reshape(-1, 3, 32, 32))
        labels.append(file_labels.astype(np.int64))
    return np.concatenate(images).transpose(0, 2, 3, 1).copy(), np.concatenate(labels)


def cifar_num_classes(name: str) -> int:
    return _CIFAR_FOLDERS[name][4]


def cifar_stats(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Normalisation ``(mean, std)`` of ``cifar10`` or ``cifar100``, each its own."""
    return (CIFAR100_MEAN, CIFAR100_STD) if name == "cifar100" else (CIFAR_MEAN, CIFAR_STD)


def load_digits_images(train: bool = True, seed: int = 0, test_fraction: float = 0.25,
                       size: int = 32) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """scikit-learn's 8×8 digits (1,797 images, 10 classes) as ``(N, size, size, 3)`` uint8,
    split by a fixed seeded stratified split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0 * 255.0).astype(np.uint8)  # (N, 8, 8)
    labels = digits.target.astype(np.int64)
    idx_train, idx_test = train_test_split(
        np.arange(len(labels)), test_size=test_fraction, random_state=seed, stratify=labels
    )
    idx = idx_train if train else idx_test
    big = torch.nn.functional.interpolate(
        torch.from_numpy(images[idx]).float()[:, None], size=(size, size), mode="bilinear",
        align_corners=False,
    )  # fmt: skip
    big = big.clamp(0, 255).round().to(torch.uint8).squeeze(1).numpy()
    return np.repeat(big[..., None], 3, axis=-1), labels[idx]


def read_image(path: str) -> Image.Image:
    """An RGB image from ``path`` (the ImageFolder loader); a corrupt, truncated or non-image
    file is a one-line :class:`DataError` naming it."""
    try:
        with open(path, "rb") as fh:
            return Image.open(fh).convert("RGB")
    except (OSError, ValueError, SyntaxError) as exc:  # PIL raises all three for bad files
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "cannot identify image file" in reason:
            reason = "not an image PIL can read"
        raise DataError(f"cannot read image {path}: {reason}") from None


class ArrayImageDataset(Dataset):
    """In-memory ``(N, H, W, 3)`` uint8 images with labels, through a PIL transform."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform=None):
        if len(images) != len(labels):
            raise DataError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        img = Image.fromarray(self.images[i])
        if self.transform is not None:
            img = self.transform(img)
        return img, int(self.labels[i])


def build_transform(train: bool, img_size: int = 32, *, mean=CIFAR_MEAN, std=CIFAR_STD,
                    weak_aug: bool = False, auto_augment: str | None = "rand-m9-mstd0.5-inc1",
                    color_jitter: float = 0.4, re_prob: float = 0.25,
                    scale: tuple[float, float] = (0.08, 1.0), interpolation: str = "random",
                    crop_pct: float | None = None):  # fmt: skip
    """The paper's recipe through timm's ``create_transform``; ``weak_aug`` = flip + normalise.

    Training: random-resized crop (``interpolation``: ``random`` picks bilinear or bicubic per
    image, as released; it also leaves RandAugment on its random default), flip, RandAugment,
    random erasing. Evaluation with ``crop_pct``: resize the short side to
    ``floor(img_size / crop_pct)`` (bilinear), centre-crop ``img_size`` (CIFAR at 0.875: 36 then
    32); ``crop_pct=None`` keeps images of at most 64 px uncropped, larger ones take timm's
    default crop.
    """
    import torchvision.transforms as T
    from timm.data import create_transform

    if not train:
        if crop_pct is not None:
            return create_transform(img_size, is_training=False, crop_pct=crop_pct,
                                    interpolation="bilinear", mean=mean, std=std)  # fmt: skip
        if img_size <= 64:  # small images: no resize-crop at evaluation
            return T.Compose([T.Resize(img_size), T.ToTensor(), T.Normalize(mean, std)])
        return create_transform(img_size, is_training=False, mean=mean, std=std)
    if weak_aug:
        return T.Compose([T.Resize(img_size), T.RandomHorizontalFlip(), T.ToTensor(),
                          T.Normalize(mean, std)])  # fmt: skip
    return create_transform(
        img_size,
        is_training=True,
        scale=scale,
        color_jitter=color_jitter,
        auto_augment=auto_augment,
        interpolation=interpolation,
        re_prob=re_prob,
        re_mode="pixel",
        mean=mean,
        std=std,
    )


def imbalance_counts(n_max: int, num_classes: int, beta: float) -> list[int]:
    """Long-tail profile: class i keeps floor(n_max · beta^(-i/(C-1))) samples."""
    if beta < 1:
        raise ValueError(f"imbalance beta must be >= 1, got {beta}")
    if num_classes == 1:
        return [n_max]
    # the tiny epsilon keeps exact products (5000 · 100^-1 = 50) from flooring to 49
    return [
        int(np.floor(n_max * beta ** (-i / (num_classes - 1)) + 1e-9)) for i in range(num_classes)
    ]
