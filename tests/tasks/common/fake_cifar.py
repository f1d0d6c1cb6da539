"""Generated CIFAR folders in the python-pickle layout (random pixels, shuffled labels)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

_LAYOUT = {
    "cifar10": ("cifar-10-batches-py", b"labels", 10),
    "cifar100": ("cifar-100-python", b"fine_labels", 100),
}


def write_cifar(root: Path, name: str = "cifar10", per_class_train: int = 20,
                per_class_test: int = 2, seed: int = 0) -> Path:  # fmt: skip
    """Write ``root/<cifar folder>`` and return ``root``; CIFAR-10 splits its training set
    into five ``data_batch_*`` files like the real one."""
    folder, key, classes = _LAYOUT[name]
    out = root / folder
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    def dump(fname: str, labels: np.ndarray) -> None:
        data = rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8)
        with open(out / fname, "wb") as fh:
            pickle.dump({b"data": data, key: labels.tolist()}, fh)

    train = rng.permutation(np.repeat(np.arange(classes), per_class_train))
    test = rng.permutation(np.repeat(np.arange(classes), per_class_test))
    if name == "cifar10":
        for i, part in enumerate(np.array_split(train, 5), start=1):
            dump(f"data_batch_{i}", part)
        dump("test_batch", test)
    else:
        dump("train", train)
        dump("test", test)
    return root
