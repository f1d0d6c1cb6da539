"""The image task end to end: embedded digits, real CIFAR-10, ImageFolder, configs, eval."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from cli import app
from dnrt_core.engine import evaluate_checkpoint, resolve_config, run
from dnrt_core.engine.config import load_yaml
from tasks.image import ImageTask

REPO = Path(__file__).resolve().parents[3]
QUICK = {"train.max_steps_per_epoch": 2, "train.epochs": 1, "data.test_subset": 64}


@pytest.mark.parametrize("path", sorted(REPO.glob("configs/image_*.yaml")), ids=lambda p: p.stem)
def test_configs_resolve(path):
    cfg = resolve_config(ImageTask(), config_file=path)
    raw = load_yaml(path)
    assert cfg["model"]["name"] == raw["model"]["name"]
    assert cfg["mech"]["act"] == "raa" and cfg["mech"]["arr"] is True
    expected_lambda = 20.0 if "cifar100" in path.stem else 10.0
    assert cfg["mech"]["arr_lambda"] == expected_lambda
    assert cfg["train"]["lr"] == pytest.approx(5e-4 * 256 / 512)


def test_digits_default_via_cli(tmp_path):
    out = tmp_path / "run"
    args = ["train", "image", "--act", "dnrt", "--out", str(out), "--model", "resnet18"]
    args += ["--set", "train.max_steps_per_epoch=3", "--epochs", "1", "--quiet"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dataset"] == "digits" and summary["mechanism"] == "dnrt"
    assert summary["train_size"] == 1347 and summary["test_size"] == 450
    ev = CliRunner().invoke(app, ["eval", str(out / "best.pt")])
    assert ev.exit_code == 0, ev.output
    assert f"top1={summary['best']['test']['top1']:.2f}" in ev.output


def test_demo_defaults_and_its_gelu_baseline_command(tmp_path, monkeypatch):
    """``dnrt train image --act dnrt`` (README command 1) trains ViT-Tiny on 16 px digits and
    ends by naming its files and a baseline command that works as printed."""
    import shlex

    monkeypatch.chdir(tmp_path)
    cfg = resolve_config(ImageTask())
    assert (cfg["data"]["dataset"], cfg["model"]["name"]) == ("digits", "vit_tiny")
    assert cfg["data"]["img_size"] == 16  # 16 patches: the measured ~1 min demo recipe
    quick = ["--set", "train.max_steps_per_epoch=2", "--set", "data.test_subset=40"]
    result = CliRunner().invoke(app, ["train", "image", "--act", "dnrt", "--epochs", "1", *quick])
    assert result.exit_code == 0, result.output
    run_dir = Path("runs/image/digits-vit_tiny-dnrt-s0")
    lines = result.output.splitlines()
    assert f"run folder: {run_dir}" in lines
    assert any(line.startswith(f"checkpoint: {run_dir / 'best.pt'}") for line in lines)
    assert any(line.startswith(f"curves:     {run_dir / 'metrics.jsonl'}") for line in lines)
    command = lines[-1].strip()
    for part in command.split(" && "):
        argv = shlex.split(part)
        assert argv[0] == "dnrt"
        step = CliRunner().invoke(app, argv[1:])
        assert step.exit_code == 0, step.output
    baseline = json.loads(Path("runs/image/digits-vit_tiny-gelu-s0/summary.json").read_text())
    assert baseline["mechanism"] == "gelu" and baseline["epochs"] == 1
    assert (run_dir / "vs_gelu.png").stat().st_size > 10_000


def test_real_cifar10_subset_and_exact_eval(real_data, tmp_path):
    overrides = {
        **QUICK,
        "data.dataset": "cifar10",
        "data.data_dir": str(real_data),
        "data.train_subset": 500,
        "data.batch_size": 16,
        "model.name": "vit_tiny",
        "mech.act": "raa",
        "mech.arr": True,
    }
    summary = run("image", overrides, tmp_path / "c10", quiet=True)
    assert summary["train_size"] == 500 and summary["test_size"] == 64
    _, metrics = evaluate_checkpoint(tmp_path / "c10" / "best.pt", device="cpu")
    assert metrics["top1"] == summary["best"]["test"]["top1"]
    assert metrics["top5"] == summary["best"]["test"]["top5"]


def test_imagefolder(tmp_path):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            folder = tmp_path / "imgs" / split / cls
            folder.mkdir(parents=True)
            for i in range(4):
                pixels = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    overrides = {
        **QUICK,
        "data.dataset": "imagefolder",
        "data.data_dir": str(tmp_path / "imgs"),
        "data.batch_size": 4,
        "data.img_size": 32,
        "model.name": "resnet18",
        "mech.act": "dpa",
    }
    summary = run("image", overrides, tmp_path / "run", quiet=True)
    assert summary["train_size"] == 8 and summary["final"]["top1"] >= 0


def test_imagefolder_missing_split(tmp_path):
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(ValueError, match="imagefolder needs"):
        run(
            "image",
            {"data.dataset": "imagefolder", "data.data_dir": str(tmp_path)},
            tmp_path / "run",
            quiet=True,
        )


def test_train_subset_hash_in_summary(tmp_path):
    """data.train_indices_sha256: SHA-256 of the subset's sorted int64 little-endian indices."""
    import hashlib

    from sklearn.model_selection import train_test_split

    over = {**QUICK, "data.train_subset": 100, "data.batch_size": 16, "model.name": "resnet18",
            "train.max_steps_per_epoch": 1}  # fmt: skip
    summary = run("image", over, tmp_path / "sub", quiet=True)
    labels = np.asarray(load_digits_labels())
    idx, _ = train_test_split(np.arange(len(labels)), train_size=100, random_state=0,
                              stratify=labels)  # fmt: skip
    expected = hashlib.sha256(np.sort(idx).astype("<i8").tobytes()).hexdigest()
    assert summary["data"] == {"train_indices_sha256": expected}
    full = ImageTask().setup(resolve_config(ImageTask(), {"data.test_subset": 10}), device="cpu")
    assert full.train_indices is None  # the whole training set: no hash written


def load_digits_labels():
    from tasks.common.vision import load_digits_images

    return load_digits_images(train=True)[1]


def test_val_fraction_selects_on_a_held_out_split(tmp_path):
    """With data.val_fraction the validation images come out of the training set, best.pt is
    chosen on them and the test set plays no part in the choice; without it, test selects."""
    task = ImageTask()
    overrides = {**QUICK, "train.epochs": 2, "model.name": "resnet18", "data.val_fraction": 0.2}
    cfg = resolve_config(task, overrides)
    data = task.setup(cfg, device=torch.device("cpu"))
    assert task.select_split == "val" and set(data.splits) == {"val", "test"}
    train_y = np.asarray(data.train.dataset.labels)
    val_y = np.asarray(data.splits["val"].dataset.labels)
    assert len(train_y) + len(val_y) == 1347 and len(val_y) == data.info["val_size"]
    share = np.bincount(val_y) / len(val_y) - np.bincount(train_y) / len(train_y)
    assert np.abs(share).max() < 0.01
    train_x = {x.tobytes() for x in data.train.dataset.images}
    assert not any(x.tobytes() in train_x for x in data.splits["val"].dataset.images)
    summary = run("image", overrides, tmp_path / "val", quiet=True)
    lines = [json.loads(x) for x in (tmp_path / "val" / "metrics.jsonl").read_text().splitlines()]
    best = max(lines, key=lambda r: r["val_top1"])  # the first epoch wins ties
    assert summary["best"]["epoch"] == best["epoch"]
    assert summary["best"]["val"]["top1"] == pytest.approx(best["val_top1"])
    assert summary["val_size"] == len(val_y)
    assert ImageTask().select_split == "test"  # the default: no val split, as released
    task.setup(resolve_config(task, QUICK), device=torch.device("cpu"))
    assert task.select_split == "test"
