"""CIFAR transforms against the released recipe (QTClassification ``build_timm_aug_kwargs``);
image data faults caught where the data is read, in one line naming the file."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image
from timm.data import create_transform

from dnrt_core.errors import DataError
from tasks.common.vision import (
    CIFAR100_MEAN,
    CIFAR100_STD,
    CIFAR_MEAN,
    CIFAR_STD,
    build_transform,
    cifar_stats,
    load_cifar,
    read_image,
)

# the released qtcls/datasets/__init__.py, written out: CIFAR statistics and timm kwargs
RELEASED_STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
RELEASED_TRAIN = dict(is_training=True, use_prefetcher=False, no_aug=False, scale=(0.08, 1.0),
                      ratio=(3.0 / 4.0, 4.0 / 3.0), hflip=0.5, vflip=0.0, color_jitter=0.4,
                      auto_augment="rand-m9-mstd0.5-inc1", interpolation="random", re_prob=0.25,
                      re_mode="pixel", re_count=1, re_num_splits=0, separate=False)  # fmt: skip
RELEASED_EVAL = dict(is_training=False, use_prefetcher=False, no_aug=False, crop_pct=0.875,
                     interpolation="bilinear")  # fmt: skip


def _images(n: int = 6, size: int = 32) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    arrays = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    return [Image.fromarray(a) for a in arrays]


def _seeded(tf, img: Image.Image, seed: int) -> torch.Tensor:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return tf(img)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_statistics_are_the_released_ones(name):
    assert cifar_stats(name) == RELEASED_STATS[name]
    assert (CIFAR_MEAN, CIFAR_STD) == RELEASED_STATS["cifar10"]
    assert (CIFAR100_MEAN, CIFAR100_STD) == RELEASED_STATS["cifar100"]


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_eval_transform_resizes_to_36_and_centre_crops_32(name):
    mean, std = RELEASED_STATS[name]
    ours = build_transform(False, 32, mean=mean, std=std, crop_pct=0.875)
    released = create_transform(input_size=32, mean=mean, std=std, **RELEASED_EVAL)
    by_hand = T.Compose([T.Resize(36, interpolation=T.InterpolationMode.BILINEAR),
                         T.CenterCrop(32), T.ToTensor(), T.Normalize(mean, std)])  # fmt: skip
    for img in _images():
        out = ours(img)
        assert out.shape == (3, 32, 32)
        assert torch.equal(out, released(img))
        assert torch.equal(out, by_hand(img))
    assert not torch.equal(out, T.Compose([T.ToTensor(), T.Normalize(mean, std)])(img))


def test_eval_without_crop_pct_is_unchanged():
    """crop_pct=None (the embedded digits): small images are only resized and normalised."""
    img = _images(1)[0]
    plain = T.Compose([T.ToTensor(), T.Normalize(CIFAR_MEAN, CIFAR_STD)])
    assert torch.equal(build_transform(False, 32)(img), plain(img))


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_train_transform_is_the_released_one(name):
    mean, std = RELEASED_STATS[name]
    ours = build_transform(True, 32, mean=mean, std=std)
    released = create_transform(input_size=32, mean=mean, std=std, **RELEASED_TRAIN)
    assert repr(ours) == repr(released)
    crop = ours.transforms[0]
    assert crop.scale == (0.08, 1.0) and isinstance(crop.interpolation, tuple)  # random interp
    for seed, img in enumerate(_images()):
        assert torch.equal(_seeded(ours, img, seed), _seeded(released, img, seed))


def test_bicubic_is_an_option_and_differs():
    ours = build_transform(True, 32, interpolation="bicubic")
    assert "bicubic" in repr(ours.transforms[0]).lower()
    assert repr(ours) != repr(build_transform(True, 32))


# --------------------------------------------------------------------------- data faults


def _fake_cifar10(root, test_labels):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(1, 6):
        entry = {b"data": rng.integers(0, 255, (4, 3072), dtype=np.uint8), b"labels": [0, 1, 2, 3]}
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(entry))
    entry = {b"data": rng.integers(0, 255, (len(test_labels), 3072), dtype=np.uint8),
             b"labels": test_labels}  # fmt: skip
    (folder / "test_batch").write_bytes(pickle.dumps(entry))
    return root


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ([0, 1, 10], "label 10 at index 2 is out of range for 10 classes"),
        ([0, -1, 2], "label -1 at index 1 is out of range"),
        ([0, 1.5, 2], "label 1.5 at index 1 is not an integer"),
    ],
)
def test_cifar_labels_checked_at_load(tmp_path, labels, message):
    root = _fake_cifar10(tmp_path, labels)
    images, _ = load_cifar(root, "cifar10", train=True)  # the training files are fine
    assert images.shape == (20, 32, 32, 3)
    with pytest.raises(DataError, match=rf"test_batch: {message}"):
        load_cifar(root, "cifar10", train=False)


def test_cifar_pixels_and_labels_must_agree(tmp_path):
    root = _fake_cifar10(tmp_path, [0, 1, 2])
    entry = {b"data": np.zeros((3, 100), np.uint8), b"labels": [0, 1, 2]}
    (root / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps(entry))
    with pytest.raises(DataError, match="300 pixel values for 3 labels"):
        load_cifar(root, "cifar10", train=False)


def test_read_image_names_bad_files(tmp_path):
    good = tmp_path / "good.png"
    noise = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(noise).save(good)
    assert read_image(str(good)).size == (32, 32)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(DataError, match=r"cannot read image .*truncated.png"):
        read_image(str(truncated))
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(DataError, match=r"notes.png: not an image PIL can read"):
        read_image(str(text))
