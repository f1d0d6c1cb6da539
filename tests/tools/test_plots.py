"""Figure-2 response distributions and training curves."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from torch import nn

from dnrt_core import RAA, tune
from dnrt_core.tools.plots import (
    collect_responses,
    figure2_sites,
    plot_curves,
    plot_response_distributions,
    read_metrics,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny_vit() -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(
        "vit_tiny_patch16_224",
        img_size=16,
        patch_size=4,
        num_classes=4,
        embed_dim=32,
        depth=4,
        num_heads=2,
    )


def _batches(n: int = 48, size: int = 16) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 3, size, size, generator=g)
    y = torch.arange(n) % 4
    return [(x[i : i + 16], y[i : i + 16]) for i in range(0, n, 16)]


def test_figure2_sites() -> None:
    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=4, num_classes=10)
    sites, agg, pool = figure2_sites(tune(vit, act="raa", arr=True))
    assert sites == ["blocks.0.mlp.act", "blocks.3.mlp.act", "blocks.9.mlp.act"]  # layers 1, 4, 10
    assert (agg, pool) == ("blocks.11", "token")
    sites, agg, pool = figure2_sites(_tiny_vit())  # depth 4: spread over the blocks
    assert sites == ["blocks.0.mlp.act", "blocks.2.mlp.act", "blocks.3.mlp.act"]
    assert agg == "blocks.3"


def test_responses_and_figure2_png(tmp_path: Path) -> None:
    base = tune(_tiny_vit())
    dnrt = tune(_tiny_vit(), act="raa", arr=True, example_inputs=torch.randn(2, 3, 16, 16))
    with torch.no_grad():  # a trained-looking RAA: non-zero shifts
        for m in dnrt.modules():
            if isinstance(m, RAA):
                m.weight.normal_(0, 0.3)
    sites, agg, pool = figure2_sites(dnrt)
    batches = _batches()
    responses = {
        "GELU": collect_responses(base, batches, [*sites, agg], pool=pool),
        "DNRT": collect_responses(dnrt, batches, [*sites, agg], pool=pool, max_samples=40),
    }
    resp, labels = responses["GELU"]["blocks.0.mlp.act"]
    assert resp.shape == (48, 128) and labels.shape == (48,)
    assert responses["GELU"][agg][0].shape == (48, 32)  # class token of the residual stream
    assert responses["DNRT"][agg][0].shape == (40, 32)
    np.testing.assert_array_equal(labels, np.arange(48) % 4)
    # the hooked class token equals the block output's token 0
    with torch.no_grad():
        x = batches[0][0]
        feats = base.model.patch_embed(x)
        feats = base.model._pos_embed(feats)
        out0 = base.model.blocks[0](base.model.norm_pre(feats))
    got = collect_responses(base, [batches[0]], ["blocks.0"])["blocks.0"][0]
    np.testing.assert_allclose(got, out0[:, 0].numpy(), rtol=1e-5, atol=1e-6)
    assert base.training  # mode restored

    out = plot_response_distributions(
        responses,
        tmp_path / "fig" / "fig2.png",
        classes=[0, 2, 3],
        class_names=["airplane", "automobile", "bird", "cat"],
    )
    assert out.is_file() and out.stat().st_size > 20_000
    with Image.open(out) as img:
        img.verify()
    with Image.open(out) as img:
        w, h = img.size
    assert w > 1500 and 600 < h < w

    with pytest.raises(ValueError, match="did you mean 'blocks.0.mlp.act'"):
        collect_responses(base, batches, ["blocks.0.mlp.actt"])


def test_cnn_responses_per_pixel_pool() -> None:
    torch.manual_seed(0)
    cnn = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(6, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    )
    model = tune(cnn, act="raa", arr=True, num_classes=4)
    sites, agg, pool = figure2_sites(model)
    assert sites == ["1", "3"] and agg == "2" and pool == "auto"
    got = collect_responses(model, _batches(32, 8), [*sites, agg], pool=pool)
    assert got["3"][0].shape == (32, 8) and got["2"][0].shape == (32, 8)
    # global average pool of the feature map
    x = _batches(32, 8)[0][0]
    with torch.no_grad():
        expected = cnn[:4](x).mean(dim=(2, 3))
    np.testing.assert_allclose(got["3"][0][:16], expected.numpy(), rtol=1e-5, atol=1e-6)


def _write_run(root: Path, name: str, mech: str, seed: int, epochs: int = 5) -> Path:
    run = root / name
    run.mkdir(parents=True)
    lines = []
    for e in range(1, epochs + 1):
        rec = {
            "epoch": e,
            "lr": 1e-3,
            "train_loss": 2.0 / e + seed * 0.1,
            "train_aux_loss": 0.0,
            "epoch_time": 1.0,
            "val_loss": 2.2 / e,
            "val_top1": 50 + 5 * e + (mech == "dnrt"),
        }
        lines.append(json.dumps(rec))
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    summary = {
        "task": "image",
        "model": "vit_tiny",
        "mechanism": mech,
        "seed": seed,
        "primary_metric": "top1",
    }
    (run / "summary.json").write_text(json.dumps(summary))
    return run


def test_plot_curves(tmp_path: Path) -> None:
    a = _write_run(tmp_path / "sweep", "vit_tiny__gelu__s0", "gelu", 0)
    b = _write_run(tmp_path / "sweep", "vit_tiny__dnrt__s0", "dnrt", 0)
    with open(b / "metrics.jsonl", "a") as fh:
        fh.write('{"epoch": 6, "train_lo')  # a line cut off by an interrupted write
    assert len(read_metrics(b)) == 5
    out = plot_curves([a, b], tmp_path / "curves.png")
    with Image.open(out) as img:
        w, h = img.size
    assert out.stat().st_size > 10_000 and w > 2 * h
    # a sweep folder expands to its runs; metrics=None picks val_<primary metric>
    out2 = plot_curves([tmp_path / "sweep"], tmp_path / "c2.png", metrics=None)
    assert out2.is_file()
    with pytest.raises(ValueError, match="val_auc"):
        plot_curves([a], tmp_path / "bad.png", metrics=("train_loss", "val_auc"))
    with pytest.raises(FileNotFoundError):
        plot_curves([tmp_path / "nothing"], tmp_path / "bad.png")
