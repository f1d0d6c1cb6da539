"""Long-tail task: LT profiles, subset selection, shot groups, sampler, models, training, engine."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from dnrt_core import tune
from dnrt_core.engine import build, resolve_config, run
from dnrt_core.errors import DataError
from dnrt_core.tuning.sites import cnn_feature_site
from tasks.longtail import LongTailTask
from tasks.longtail.data import (
    group_accuracy,
    longtail_profile,
    sampling_weights,
    scale_counts,
    select_longtail,
    shot_groups,
)
from tasks.longtail.models import create_model, resnet32

REPO = Path(__file__).resolve().parents[3]
CPU = torch.device("cpu")
FAST = {"train.max_steps_per_epoch": 2, "data.test_subset": 40, "data.batch_size": 16}


def _resolve(**overrides) -> dict:
    return resolve_config(LongTailTask(), overrides)


# --------------------------------------------------------------------------- profile


@pytest.mark.parametrize(("beta", "tail"), [(10, 500), (50, 100), (100, 50)])
def test_profile_cifar10(beta: int, tail: int) -> None:
    counts = longtail_profile(5000, 10, beta)
    assert counts[0] == 5000 and counts[-1] == tail and len(counts) == 10
    assert counts == sorted(counts, reverse=True)
    assert counts == [int(np.floor(5000 * beta ** (-i / 9) + 1e-9)) for i in range(10)]


@pytest.mark.parametrize(("beta", "tail"), [(10, 50), (50, 10), (100, 5)])
def test_profile_cifar100(beta: int, tail: int) -> None:
    counts = longtail_profile(500, 100, beta)
    assert counts[0] == 500 and counts[-1] == tail and len(counts) == 100
    assert all(a >= b for a, b in zip(counts, counts[1:], strict=False))


def test_profile_rejects_bad_beta() -> None:
    with pytest.raises(ValueError, match="beta"):
        longtail_profile(100, 10, 0.5)


def test_scale_counts_keeps_every_class() -> None:
    small = scale_counts(longtail_profile(5000, 10, 100), 500)
    assert sum(small) <= 510 and min(small) >= 1 and small == sorted(small, reverse=True)


# --------------------------------------------------------------------------- selection


def test_selection_deterministic_from_seed() -> None:
    labels = np.repeat(np.arange(5), 40)[np.random.default_rng(0).permutation(200)]
    counts = [40, 20, 10, 5, 2]
    a = select_longtail(labels, counts, selection="seeded", seed=3)
    b = select_longtail(labels, counts, selection="seeded", seed=3)
    c = select_longtail(labels, counts, selection="seeded", seed=4)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.bincount(labels[a], minlength=5).tolist() == counts
    first = select_longtail(labels, counts, selection="first")
    for k, n in enumerate(counts):  # the first n images of class k in file order
        assert np.array_equal(first[labels[first] == k], np.flatnonzero(labels == k)[:n])
    with pytest.raises(ValueError, match="needs 50"):
        select_longtail(labels, [50, 1, 1, 1, 1])


def _write_cifar100(root: Path, per_class_train: int = 12, per_class_test: int = 2) -> Path:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, per in (("train", per_class_train), ("test", per_class_test)):
        labels = rng.permutation(np.repeat(np.arange(100), per)).tolist()
        data = rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8)
        entry = {b"data": data, b"fine_labels": labels, b"coarse_labels": [0] * len(labels)}
        with open(folder / name, "wb") as fh:
            pickle.dump(entry, fh)
    return root


@pytest.mark.parametrize("beta", [10, 50, 100])
def test_cifar100_lt_synthetic_pickle(tmp_path: Path, beta: int) -> None:
    """cifar100-lt on a generated file with the cifar-100-python keys (b"data", b"fine_labels")."""
    root = _write_cifar100(tmp_path)
    task = LongTailTask()
    over = {"data.dataset": "cifar100-lt", "data.data_dir": str(root), "data.imbalance": beta}
    if min(longtail_profile(12, 100, beta)) < 1:  # 12 images a class: tail classes would be empty
        with pytest.raises(DataError, match=r"leaves class\(es\) .* without training images"):
            task.setup(_resolve(**over), device=CPU)
        over["data.imbalance"] = beta = 12
    data = task.setup(_resolve(**over), device=CPU)
    assert data.num_classes == 100
    assert data.info["class_counts"] == longtail_profile(12, 100, beta)
    assert data.info["n_max"] == 12 and data.info["test_size"] == 200
    again = task.setup(_resolve(**over), device=CPU)
    assert np.array_equal(data.train.dataset.images, again.train.dataset.images)
    x, y = next(iter(data.train))
    assert x.shape[1:] == (3, 32, 32) and y.dtype == torch.int64


# --------------------------------------------------------------------------- real CIFAR-10


@pytest.fixture(scope="module")
def cifar10_train(real_data: Path) -> tuple[np.ndarray, np.ndarray]:
    from tasks.common.vision import load_cifar

    return load_cifar(real_data, "cifar10", train=True)


@pytest.mark.parametrize(("beta", "tail"), [(10, 500), (50, 100), (100, 50)])
def test_real_cifar10_lt_subset(cifar10_train, beta: int, tail: int) -> None:
    images, labels = cifar10_train
    counts = longtail_profile(int(np.bincount(labels).min()), 10, beta)
    assert counts[0] == 5000 and counts[-1] == tail
    keep = select_longtail(labels, counts, seed=0)
    assert np.bincount(labels[keep], minlength=10).tolist() == counts
    assert len(np.unique(keep)) == len(keep) == sum(counts)


def test_real_cifar10_lt_task(real_data: Path) -> None:
    over = {"data.dataset": "cifar10-lt", "data.data_dir": str(real_data),
            "data.imbalance": 100, "data.test_subset": 100}  # fmt: skip
    data = LongTailTask().setup(_resolve(**over), device=CPU)
    assert data.info["class_counts"] == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert data.info["train_size"] == 12406
    assert data.info["shot_groups"] == {"many": list(range(8)), "medium": [8, 9], "few": []}


# --------------------------------------------------------------------------- groups


def test_shot_groups_and_group_accuracy() -> None:
    counts = [5000, 101, 100, 20, 19, 1]
    assert shot_groups(counts) == {"many": [0, 1], "medium": [2, 3], "few": [4, 5]}
    acc = group_accuracy([90.0, 80.0, 60.0, 40.0, 10.0, 0.0], counts)
    assert acc == {"many": 85.0, "medium": 50.0, "few": 5.0}
    assert group_accuracy([50.0, 70.0], [200, 150]) == {"many": 60.0}  # empty groups left out


def test_format_report_table() -> None:
    task = LongTailTask()
    task._class_counts = [150, 50, 5]
    text = task.format_report({"top1": 50.0, "top5": 100.0, "loss": 1.0,
                               "per_class": [90.0, 50.0, 10.0]})  # fmt: skip
    lines = text.splitlines()
    assert lines[0].startswith("top1=50.00")
    assert any(ln.split()[:2] == ["few", "1"] and ln.endswith("10.00") for ln in lines)
    assert any(ln.split() == ["1", "medium", "50", "50.00"] for ln in lines)


# --------------------------------------------------------------------------- sampler


def test_class_balanced_sampler_balances_batches() -> None:
    from dnrt_core.engine.data import make_loader

    labels = np.repeat(np.arange(5), [400, 100, 25, 10, 4])
    ds = torch.utils.data.TensorDataset(torch.zeros(len(labels), 1), torch.as_tensor(labels))
    loader = make_loader(ds, 64, train=True, weights=sampling_weights(labels, "class-balanced"))
    seen = torch.cat([y for _, y in loader])
    freq = torch.bincount(seen, minlength=5).float() / len(seen)
    assert torch.all((freq - 0.2).abs() < 0.06), freq  # plain shuffling: 0.74 / 0.008
    assert sampling_weights(labels, "none") is None
    sqrt = sampling_weights(labels, "sqrt")
    assert float(sqrt[labels == 0].sum() / sqrt[labels == 4].sum()) == pytest.approx(10.0)


# --------------------------------------------------------------------------- models


def test_resnet32_structure() -> None:
    model = resnet32(10)
    n = sum(p.numel() for p in model.parameters())
    assert 0.45e6 < n < 0.47e6, n
    acts = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    assert len(acts) == len({id(m) for m in acts}) == 31  # stem + 2 per block, no sharing
    assert model.num_classes == 10 and cnn_feature_site(model) == "layer3"
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    gelu = create_model("resnet32", 7, act_layer=nn.GELU)
    assert sum(isinstance(m, nn.GELU) for m in gelu.modules()) == 31
    with pytest.raises(ValueError, match="valid: resnet32, vit_tiny"):
        create_model("resnet33", 10)


def test_vit_tiny_is_timm_patch4() -> None:
    vit = create_model("vit_tiny", 10, img_size=32, drop_path=0.1)
    assert vit.patch_embed.patch_size == (4, 4) and vit.patch_embed.num_patches == 64
    assert vit.embed_dim == 192 and len(vit.blocks) == 12 and vit.num_classes == 10
    tuned = tune(vit, act="raa", arr=True, num_classes=10, family="vit")
    assert len(tuned.report.arr_sites) == 12 and len(tuned.report.replaced) == 12


# --------------------------------------------------------------------------- training


MECHS = {
    "relu": {"mech.act": "relu"},
    "gelu": {"mech.act": "gelu"},
    "raa+arr": {"mech.act": "raa", "mech.arr": True},
    "dpa": {"mech.act": "dpa"},
}


@pytest.mark.parametrize("model", ["resnet32", "vit_tiny"])
@pytest.mark.parametrize("mech", list(MECHS))
def test_training_steps_digits_lt(model: str, mech: str) -> None:
    """Three optimiser steps on digits-lt through the task hooks; loss and memories move."""
    over = {"model.name": model, "data.batch_size": 16, "data.test_subset": 20, **MECHS[mech]}
    if model == "vit_tiny":
        over["model.depth"] = 3  # the 12-block model is covered by test_vit_tiny_is_timm_patch4
    torch.manual_seed(0)
    b = build(LongTailTask(), _resolve(**over), CPU)
    task, data, tuned = b.task, b.data, b.model
    opt = torch.optim.AdamW(tuned.parameters(), lr=1e-3)
    tuned.train()
    for step, batch in enumerate(task.train_batches(data, epoch=0)):
        inputs, y = task.batch_inputs(batch, CPU)
        out = tuned(*inputs, targets=y)
        aux = tuned.aux_loss()
        loss = task.loss(out, y, data) + aux
        assert out.shape == (16, 10) and torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if mech == "raa+arr":
            assert float(aux.detach()) > 0
        if step == 2:
            break
    if mech == "raa+arr":
        assert tuned.report.arr_sites == (["layer3"] if model == "resnet32" else
                                          ["blocks.0", "blocks.1", "blocks.2"])  # fmt: skip
        assert any(v.abs().sum() > 0 for v in tuned.memory_state().values())
    if mech == "dpa":
        assert tuned.report.dpa_sites
        if model == "resnet32":
            assert all(s.startswith("layer3.4.") for s in tuned.report.dpa_sites)
    metrics = task.evaluate(tuned, data, "test", CPU)
    assert len(metrics["per_class"]) == 10 and 0 <= metrics["top1"] <= 100
    assert {"many_shot", "medium_shot", "few_shot"} & set(metrics)


# --------------------------------------------------------------------------- engine / configs


def test_engine_run_writes_counts_and_groups(tmp_path: Path) -> None:
    over = {"train.epochs": 1, "data.sampler": "class-balanced", "mech.act": "raa",
            "mech.arr": True, **FAST}  # fmt: skip
    summary = run("longtail", over, tmp_path / "run", quiet=True)
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    counts = longtail_profile(131, 10, 100)  # smallest digits class has 131 train images
    assert saved["class_counts"] == summary["class_counts"] == counts
    assert saved["shot_groups"]["few"] == [k for k, n in enumerate(counts) if n < 20]
    final = saved["final"]
    assert len(final["per_class"]) == 10 and {"top1", "many_shot", "few_shot"} <= set(final)
    assert saved["mechanism"] == "dnrt" and saved["sampler"] == "class-balanced"


def test_cli_default_runs(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cli import app

    sets = [a for k, v in FAST.items() for a in ("--set", f"{k}={v}")]
    res = CliRunner().invoke(app, ["train", "longtail", "--epochs", "1", "--out",
                                   str(tmp_path / "cli"), "--quiet", *sets])  # fmt: skip
    assert res.exit_code == 0, res.output
    bad = CliRunner().invoke(app, ["train", "longtail", "--dataset", "cifar7-lt", "--out",
                                   str(tmp_path / "bad")])  # fmt: skip
    assert bad.exit_code == 2 and "valid: digits-lt, cifar10-lt, cifar100-lt" in bad.output


CONFIGS = sorted((REPO / "configs").glob("longtail_*.yaml"))


def test_configs_cover_table5() -> None:
    names = {p.stem for p in CONFIGS}
    expected = {f"longtail_{m}_{k}_b{b}" for m in ("vit_tiny", "resnet32")
                for k in ("baseline", "dnrt") for b in (10, 50, 100)}  # fmt: skip
    assert expected <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_resolves(path: Path) -> None:
    cfg = resolve_config(LongTailTask(), config_file=path)
    model, kind, beta = path.stem[len("longtail_") :].rsplit("_", 2)
    assert cfg["data"]["dataset"] == "cifar10-lt" and cfg["data"]["imbalance"] == int(beta[1:])
    assert cfg["model"]["name"] == model
    if kind == "dnrt":
        assert cfg["mech"]["act"] == "raa" and cfg["mech"]["arr"] is True
    else:
        assert cfg["mech"]["act"] == ("gelu" if model == "vit_tiny" else "relu")
        assert not cfg["mech"]["arr"]
    assert all(isinstance(cfg["train"][k], float) for k in ("lr", "weight_decay", "min_lr"))
    assert cfg["data"]["selection"] == "ldam" and cfg["data"]["subset_seed"] is None
    if model == "vit_tiny":  # the released image recipe (tests/tasks/image/test_recipes.py)
        assert cfg["train"]["wd_all_params"] is True and cfg["train"]["sched_lag"] == 1
        assert cfg["train"]["amp_eval"] is True
        assert cfg["train"]["cooldown_epochs"] == "warmup" and cfg["train"]["warmup_epochs"] == 20
        assert cfg["data"]["drop_last"] == "odd" and cfg["data"]["aug"] == "paper"


@pytest.mark.parametrize(
    ("dataset", "mean"),
    [("cifar10-lt", (0.4914, 0.4822, 0.4465)), ("cifar100-lt", (0.5071, 0.4865, 0.4409))],
)
def test_paper_aug_uses_the_released_image_transforms(dataset: str, mean: tuple) -> None:
    from tasks.longtail.task import build_lt_transform

    train, test = (build_lt_transform("paper", t, 32, dataset) for t in (True, False))
    from torchvision.transforms import Normalize

    for tf in (train, test):
        norm = next(t for t in tf.transforms if isinstance(t, Normalize))
        assert torch.allclose(torch.as_tensor(norm.mean), torch.tensor(mean))
    assert "size=36" in repr(test) and "CenterCrop" in repr(test)
    # the LDAM-DRW recipe keeps its own (CIFAR-10) statistics and no eval crop
    assert "CenterCrop" not in repr(build_lt_transform("crop-flip", False, 32, dataset))


def test_val_fraction_is_a_stratified_part_of_the_lt_set(tmp_path: Path) -> None:
    """data.val_fraction holds out part of every class of the LT training set; selection then
    uses it by the mean per-class accuracy, and the balanced test set is only reported."""
    task = LongTailTask()
    cfg = _resolve(**{"data.val_fraction": 0.2, **FAST})
    data = task.setup(cfg, device=CPU)
    assert task.select_split == "val" and task.primary_metric == "balanced_top1"
    counts = longtail_profile(131, 10, 100)
    val_counts = np.bincount(data.splits["val"].dataset.labels, minlength=10).tolist()
    assert val_counts == [min(round(0.2 * n), n - 1) for n in counts]
    assert [a + b for a, b in zip(data.info["class_counts"], val_counts, strict=True)] == counts
    train_x = {x.tobytes() for x in data.train.dataset.images}
    assert not any(x.tobytes() in train_x for x in data.splits["val"].dataset.images)
    summary = run("longtail", {"train.epochs": 2, "data.val_fraction": 0.2, **FAST},
                  tmp_path / "val", quiet=True)  # fmt: skip
    lines = [json.loads(x) for x in (tmp_path / "val" / "metrics.jsonl").read_text().splitlines()]
    best = max(lines, key=lambda r: r["val_balanced_top1"])
    assert summary["best"]["epoch"] == best["epoch"]
    assert summary["primary_metric"] == "balanced_top1"
    plain = LongTailTask()
    plain.setup(_resolve(**FAST), device=CPU)
    assert plain.select_split == "test" and plain.primary_metric == "top1"


RESNET32_BLOCKS = [f"layer{s}.{b}" for s in range(1, 4) for b in range(5)]


@pytest.mark.parametrize(
    ("placement", "sites"),
    [
        ("last_stage", ["layer3"]),
        ("every_stage", ["layer1", "layer2", "layer3"]),
        ("every_block", RESNET32_BLOCKS),
        ("last_stage_pre", ["layer3.4.act2:in"]),
        ("every_stage_pre", [f"layer{s}.4.act2:in" for s in range(1, 4)]),
        ("every_block_pre", [f"{b}.act2:in" for b in RESNET32_BLOCKS]),
    ],
)
def test_resnet32_arr_placements(placement: str, sites: list[str]) -> None:
    """ARR placements on the CIFAR ResNet-32, through the task's config key."""
    task = LongTailTask()
    cfg = _resolve(**{"mech.act": "raa", "mech.arr": True, "mech.arr_placement": placement,
                      **FAST})  # fmt: skip
    built = build(task, cfg, device=CPU)
    assert built.model.report.arr_sites == sites
    x, y = next(iter(built.data.train))
    built.model.train()
    built.model(x, targets=y)
    assert len(built.model._arr_losses) == len(sites)
    assert {r.shape[1] for r in built.model._arr_responses.values()} <= {16, 32, 64}


def test_arr_placement_and_sites_together_fail() -> None:
    cfg = _resolve(**{"mech.arr": True, "mech.arr_placement": "every_block",
                      "mech.arr_sites": "layer3", **FAST})  # fmt: skip
    with pytest.raises(ValueError, match="not both"):
        build(LongTailTask(), cfg, device=CPU)
    cfg = _resolve(**{"mech.arr": True, "mech.arr_placement": "every_layer", **FAST})
    with pytest.raises(ValueError, match="valid: last_stage, every_stage"):
        build(LongTailTask(), cfg, device=CPU)
