"""The shared engine on a tiny task: outputs, exact resume, non-finite loss, output folders."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from dnrt_core.engine import (
    NonFiniteLossError,
    RunError,
    evaluate_checkpoint,
    run,
)
from dnrt_core.engine import checkpoint as ckpt_io
from dnrt_core.engine.config import ConfigError
from tests.toy_task import ToyTask

DNRT = {"mech.act": "raa", "mech.arr": True, "deterministic": True}


def test_run_writes_all_outputs(tmp_path):
    summary = run(ToyTask(), {**DNRT, "train.tensorboard": True}, tmp_path / "r", quiet=True)
    out = tmp_path / "r"
    for name in ("config.yaml", "metrics.jsonl", "last.pt", "best.pt", "summary.json"):
        assert (out / name).is_file(), name
    assert any((out / "tb").iterdir())
    lines = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2]
    assert all(r["train_aux_loss"] > 0 for r in lines)  # ARR is active
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["mech"]["act"] == "raa" and cfg["task"] == "toy"
    saved = json.loads((out / "summary.json").read_text())
    assert summary.pop("run_dir") == str(out)  # returned beside the summary, not saved in it
    assert saved == json.loads(json.dumps(summary))
    assert saved["mechanism"] == "dnrt" and saved["epochs"] == 2
    assert saved["params"] > 0 and saved["train_time_s"] > 0
    assert saved["toy"] is True  # task extras
    assert {"top1", "top5", "loss"} <= set(saved["final"])
    # checkpoints hold no pickled code and the ARR memories
    state = torch.load(out / "best.pt", weights_only=True)
    assert any(k.startswith("arr.") and k.endswith("memory") for k in state["model"])


def test_eval_reproduces_best(tmp_path):
    summary = run(ToyTask(), DNRT, tmp_path / "r", quiet=True)
    _, metrics = evaluate_checkpoint(tmp_path / "r" / "best.pt", device="cpu", task=ToyTask())
    assert metrics["top1"] == summary["best"]["test"]["top1"]
    assert metrics["loss"] == pytest.approx(summary["best"]["test"]["loss"], rel=1e-6)


@pytest.mark.parametrize("mech", [DNRT, {"mech.act": "dpa", "deterministic": True}])
def test_resume_is_exact(tmp_path, mech):
    cfg = {**mech, "train.epochs": 3, "mech.dpa_interval": 2}
    run(ToyTask(), cfg, tmp_path / "full", quiet=True)
    part = run(ToyTask(), {**cfg, "train.stop_after_epoch": 1}, tmp_path / "part", quiet=True)
    assert part["stopped_at_epoch"] == 1
    assert not (tmp_path / "part" / "summary.json").exists()
    run(ToyTask(), {}, tmp_path / "part", resume=True, quiet=True)
    a = torch.load(tmp_path / "full" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "part" / "last.pt", weights_only=True)
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    strip = [
        {k: v for k, v in json.loads(ln).items() if k != "epoch_time"}
        for ln in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()
    ]
    strip_b = [
        {k: v for k, v in json.loads(ln).items() if k != "epoch_time"}
        for ln in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()
    ]
    assert strip == strip_b


def test_nonfinite_loss_stops_and_keeps_checkpoint(tmp_path):
    out = tmp_path / "r"
    with pytest.raises(NonFiniteLossError, match=r"epoch 2 step"):
        run(ToyTask(), {"data.nan_at_step": 8, "train.epochs": 3}, out, quiet=True)
    state = ckpt_io.load(out / "last.pt")
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_skip_nonfinite(tmp_path):
    summary = run(
        ToyTask(),
        {"data.nan_at_step": 8, "train.epochs": 2, "train.skip_nonfinite": True},
        tmp_path / "r",
        quiet=True,
    )
    assert summary["skipped_steps"] == 2 * 4 - 7  # 4 steps/epoch, NaN from the 8th on


def test_output_folder_is_protected(tmp_path):
    out = tmp_path / "r"
    run(ToyTask(), {"train.epochs": 1}, out, quiet=True)
    before = (out / "last.pt").read_bytes()
    with pytest.raises(RunError, match="holds another run"):
        run(ToyTask(), {"train.epochs": 1}, out, quiet=True)
    assert (out / "last.pt").read_bytes() == before
    run(ToyTask(), {"train.epochs": 1, "seed": 3}, out, overwrite=True, quiet=True)
    with pytest.raises(RunError, match="nothing to resume"):
        run(ToyTask(), {}, tmp_path / "empty", resume=True, quiet=True)


def test_unknown_key_names_closest(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'train.epochs'"):
        run(ToyTask(), {"train.epoch": 1}, tmp_path / "r", quiet=True)
    with pytest.raises(ConfigError, match="must be a positive"):
        run(ToyTask(), {"data.batch_size": 0}, tmp_path / "r", quiet=True)


def test_constant_lr_without_scheduler(tmp_path):
    run(ToyTask(), {"train.sched": "none", "train.epochs": 1}, tmp_path / "a", quiet=True)
    lines = (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["lr"] == pytest.approx(1e-2)
    run(ToyTask(), {}, tmp_path / "a", resume=True, quiet=True)


def _val_losses(out) -> list[float]:
    return [json.loads(ln)["val_loss"] for ln in (out / "metrics.jsonl").read_text().splitlines()]


def test_select_metric_loss_picks_the_lowest_val_loss(tmp_path):
    cfg = {"train.epochs": 6, "train.select_metric": "loss", "deterministic": True}
    summary = run(ToyTask(), cfg, tmp_path / "r", quiet=True)
    losses = _val_losses(tmp_path / "r")
    assert summary["select_metric"] == "loss" and not summary["stopped_early"]
    assert summary["best"]["epoch"] == 1 + losses.index(min(losses))
    assert summary["best"]["val"]["loss"] == min(losses)


def test_patience_stops_after_that_many_evaluations_without_improvement(tmp_path):
    cfg = {
        "train.epochs": 30,
        "train.lr": 0.3,  # large steps: the val loss stops improving within a few epochs
        "train.select_metric": "loss",
        "train.patience": 2,
        "deterministic": True,
    }
    summary = run(ToyTask(), cfg, tmp_path / "r", quiet=True)
    losses = _val_losses(tmp_path / "r")
    best = summary["best"]["epoch"]
    assert summary["stopped_early"] and summary["epochs"] == len(losses) < 30
    assert len(losses) == best + 2  # two evaluations without improvement, then stop
    assert min(losses[best:]) >= losses[best - 1] == min(losses)
    assert (tmp_path / "r" / "summary.json").is_file()


def test_unknown_select_metric_is_one_line_error(tmp_path):
    with pytest.raises(RunError, match=r"train.select_metric 'auc' is not a metric"):
        run(ToyTask(), {"train.select_metric": "auc"}, tmp_path / "r", quiet=True)


class _OneClassTask(ToyTask):
    """The toy task with a head that always predicts class 0 (zero weights, bias on 0)."""

    def build_model(self, cfg, data):
        net = super().build_model(cfg, data)
        with torch.no_grad():
            net.head.weight.zero_()
            net.head.bias.copy_(torch.tensor([5.0, 0.0, 0.0]))
        return net


@pytest.mark.parametrize("act", ["raa", "relu"])
def test_collapse_to_one_class_warns_once(tmp_path, capsys, act):
    cfg = {"mech.act": act, "train.epochs": 3, "train.lr": 1e-9, "train.opt": "sgd"}
    run(_OneClassTask(), cfg, tmp_path / "r", quiet=True)
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "predicts one class" in ln]
    assert len(lines) == 1, lines  # after the 2nd collapsed evaluation only
    assert lines[0].startswith("warning: epoch 2:") and "only class 0" in lines[0]
    # the hint names the cause seen on CNNs only for RAA without a warm-up
    assert ("set train.warmup_epochs" in lines[0]) is (act == "raa")
    run(_OneClassTask(), {**cfg, "train.warmup_epochs": 1}, tmp_path / "w", quiet=True)
    (line,) = [ln for ln in capsys.readouterr().err.splitlines() if "predicts one class" in ln]
    assert "warmup" not in line


def test_no_collapse_warning_for_a_trained_model(tmp_path, capsys):
    run(ToyTask(), {**DNRT, "train.epochs": 3}, tmp_path / "r", quiet=True)
    assert "predicts one class" not in capsys.readouterr().err
