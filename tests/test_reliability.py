"""Bad input gives one line on stderr, exit 2, no traceback, nothing overwritten;
SIGKILL at random moments never leaves an unloadable checkpoint."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cli import app
from dnrt_core.engine import checkpoint as ckpt_io

DNRT_CMD = [sys.executable, "-c", "from cli import main; main()"]


def _invoke(args: list[str]):
    return CliRunner().invoke(app, args)


def _assert_one_line_error(result, pattern: str) -> None:
    assert result.exit_code == 2, result.output
    err = result.stderr.strip().splitlines()
    assert len(err) == 1, result.stderr
    assert err[0].startswith("error: ")
    assert pattern in err[0], err[0]
    assert "Traceback" not in result.output


@pytest.fixture
def toy_run(tmp_path, toy_plugin) -> Path:
    out = tmp_path / "toyrun"
    result = _invoke(["train", "toy", "--epochs", "1", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    return out


CASES = {
    "missing data dir": (["train", "image", "--dataset", "cifar10"], "needs --data-dir"),
    "wrong data dir": (
        ["train", "image", "--dataset", "cifar10", "--data-dir", "/no/such/dir"],
        "cifar10 not found",
    ),
    "unknown task": (["train", "imag"], "did you mean 'image'"),
    "unknown model": (["train", "image", "--model", "vit_tinyy"], "did you mean 'vit_tiny'"),
    "unknown activation": (["train", "image", "--act", "rea"], "did you mean 'raa'"),
    "unknown dataset": (["train", "image", "--dataset", "cifar1O"], "did you mean 'cifar10'"),
    "unknown config key": (["train", "image", "--set", "train.epoch=1"], "'train.epochs'"),
    "zero batch size": (["train", "image", "--batch-size", "0"], "data.batch_size must be"),
    "negative epochs": (["train", "image", "--epochs", "-1"], "train.epochs must be"),
    "bad --set syntax": (["train", "image", "--set", "train.lr"], "key=value"),
    "option of other tasks": (
        ["train", "graph", "--weak-aug"],
        "--weak-aug is an option of task 'image' and 'longtail'",
    ),
    "option of another task (compare)": (
        ["compare", "longtail", "--backend", "dgl"],
        "--backend is an option of task 'graph'",
    ),
    "missing checkpoint": (["eval", "/no/such/best.pt"], "checkpoint not found"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_one_line(case, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # default output folders would land here
    args, pattern = CASES[case]
    result = _invoke(args)
    _assert_one_line_error(result, pattern)
    assert not (tmp_path / "runs").exists()  # nothing written


def test_corrupt_checkpoint(tmp_path, toy_run):
    bad = tmp_path / "truncated.pt"
    bad.write_bytes((toy_run / "last.pt").read_bytes()[:1000])
    _assert_one_line_error(_invoke(["eval", str(bad)]), "truncated or corrupt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    _assert_one_line_error(_invoke(["eval", str(junk)]), "truncated or corrupt")


def test_checkpoint_from_another_task(toy_run):
    before = (toy_run / "last.pt").read_bytes()
    result = _invoke(["train", "image", "--resume", "--out", str(toy_run)])
    _assert_one_line_error(result, "from task 'toy', not 'image'")
    assert (toy_run / "last.pt").read_bytes() == before


def test_checkpoint_with_other_class_count(toy_run, tmp_path):
    before = (toy_run / "last.pt").read_bytes()
    result = _invoke(["train", "toy", "--resume", "--out", str(toy_run), "--set", "data.classes=4"])
    _assert_one_line_error(result, "data.classes is 3 there, got 4")  # only epochs may change
    assert (toy_run / "last.pt").read_bytes() == before
    state = torch.load(toy_run / "last.pt", weights_only=True)
    state["num_classes"] = 4  # a checkpoint whose data no longer matches
    torch.save(state, tmp_path / "other.pt")
    result = _invoke(["eval", str(tmp_path / "other.pt")])
    _assert_one_line_error(result, "checkpoint has 4 classes")


def test_labels_out_of_range(tmp_path, toy_plugin):
    out = tmp_path / "r"
    result = _invoke(["train", "toy", "--out", str(out), "--set", "data.bad_label=true"])
    _assert_one_line_error(result, "train split: label 3 at index 5 is out of range for 3 classes")


def test_output_folder_holds_another_run(toy_run):
    before = (toy_run / "last.pt").read_bytes()
    result = _invoke(["train", "toy", "--epochs", "1", "--out", str(toy_run)])
    _assert_one_line_error(result, "holds another run")
    assert (toy_run / "last.pt").read_bytes() == before


def test_plugin_failing_to_import(toy_plugin):
    _assert_one_line_error(_invoke(["train", "broken"]), "failed to import")


def test_nonfinite_loss_message(tmp_path, toy_plugin):
    result = _invoke(["train", "toy", "--out", str(tmp_path / "r"), "--set", "data.nan_at_step=3"])
    assert result.exit_code == 1
    assert "loss is nan at epoch 1 step 3" in result.stderr
    assert "Traceback" not in result.output


def test_sigkill_at_random_moments(tmp_path, toy_plugin):
    """Kill training at random moments; last.pt always loads and --resume finishes the run."""
    out = tmp_path / "r"
    args = ["train", "toy", "--out", str(out), "--quiet", "--epochs", "30"]
    args += ["--set", "data.n=1536", "--set", "data.batch_size=16", "--act", "dnrt"]
    env = dict(os.environ)
    rng = random.Random(0)
    kills = 0
    first = True
    for _ in range(3):
        extra = [] if first else ["--resume"]
        proc = subprocess.Popen(DNRT_CMD + args + extra, env=env, stderr=subprocess.PIPE)
        # wait until the process has written at least one checkpoint, then kill at random
        deadline = time.time() + 120
        while time.time() < deadline and not (out / "last.pt").exists():
            if proc.poll() is not None:
                break
            time.sleep(0.1)
        time.sleep(rng.uniform(0.2, 2.5))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
        else:
            assert proc.returncode == 0, proc.stderr.read().decode()
            break
        first = False
        state = ckpt_io.load(out / "last.pt")  # never truncated
        assert state["epoch"] >= 1
    assert kills >= 2
    done = subprocess.run(DNRT_CMD + args + ["--resume"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (out / "summary.json").exists()
    final = torch.load(out / "last.pt", weights_only=True)
    assert final["epoch"] == 30


EXACT_RESUME = {
    "image": {"model.name": "resnet18", "train.max_steps_per_epoch": 2, "data.test_subset": 32,
              "data.batch_size": 8, "mech.act": "raa", "mech.arr": True},
    "graph": {"data.num_nodes": 1500, "mech.act": "dpa", "mech.dpa_interval": 1},
    "longtail": {"train.max_steps_per_epoch": 2, "data.test_subset": 50, "mech.act": "raa",
                 "mech.arr": True},
}  # fmt: skip


@pytest.mark.parametrize("task", list(EXACT_RESUME))
def test_exact_resume_per_task(task, tmp_path):
    """Two epochs equal one epoch plus --resume for one more, bit for bit (deterministic CPU)."""
    from dnrt_core.engine import run

    cfg = {**EXACT_RESUME[task], "train.epochs": 2, "deterministic": True, "device": "cpu"}
    run(task, cfg, tmp_path / "full", quiet=True)
    run(task, {**cfg, "train.stop_after_epoch": 1}, tmp_path / "part", quiet=True)
    run(task, {}, tmp_path / "part", resume=True, quiet=True)
    a = torch.load(tmp_path / "full" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "part" / "last.pt", weights_only=True)
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    states = zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True)
    for group_a, group_b in states:
        for k in group_a:
            assert torch.equal(torch.as_tensor(group_a[k]), torch.as_tensor(group_b[k]))
    assert a["epoch"] == b["epoch"] == 2
