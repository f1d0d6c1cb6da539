"""Run folders never lose or mix a run: the lock, --overwrite that keeps the old run until
the new one's first checkpoint, restarts of runs killed before it, temp-file and metrics
repair, Ctrl-C messages; in-process on the toy task (seconds)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from dnrt_core.engine import RunDir, RunError, run
from dnrt_core.engine import checkpoint as ckpt_io
from dnrt_core.engine.run_dir import ASIDE_PREFIX, LOCK_NAME
from dnrt_core.errors import ConfigError, RunInterrupted
from tests.toy_task import ToyTask

FAST = {"train.epochs": 1}


def _files(path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_lock_refuses_a_second_holder(tmp_path):
    first = RunDir(tmp_path / "r")
    first.acquire()
    second = RunDir(tmp_path / "r")
    with pytest.raises(RunError, match=rf"in use by another dnrt run \(pid {os.getpid()}\)"):
        second.acquire()
    first.release()
    assert not (tmp_path / "r" / LOCK_NAME).exists()
    second.acquire()  # free again
    second.release()


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    (out / LOCK_NAME).write_text(f"{_dead_pid()}\n")  # left by a kill -9: no flock held
    run(ToyTask(), FAST, out, quiet=True)
    assert _files(out) == ["best.pt", "config.yaml", "last.pt", "metrics.jsonl", "summary.json"]


def test_busy_folder_is_refused_by_run(tmp_path):
    holder = RunDir(tmp_path / "r")
    holder.acquire()
    try:
        with pytest.raises(RunError, match="in use by another dnrt run"):
            run(ToyTask(), FAST, tmp_path / "r", quiet=True)
        with pytest.raises(RunError, match="in use by another dnrt run"):
            run(ToyTask(), FAST, tmp_path / "r", resume=True, quiet=True)
    finally:
        holder.release()


def test_overwrite_failing_before_its_first_checkpoint_restores_the_old_run(tmp_path):
    out = tmp_path / "r"
    run(ToyTask(), FAST, out, quiet=True)
    before = {name: (out / name).read_bytes() for name in _files(out)}
    with pytest.raises(ValueError, match="bogus"):
        run(ToyTask(), {**FAST, "train.opt": "bogus"}, out, overwrite=True, quiet=True)
    assert {name: (out / name).read_bytes() for name in _files(out)} == before


def test_overwrite_deletes_the_old_run_after_the_first_checkpoint(tmp_path):
    out = tmp_path / "r"
    run(ToyTask(), FAST, out, quiet=True)
    seen = []

    class Watch(ToyTask):  # looks into the folder while the new run trains
        def loss(self, outputs, targets, data):
            seen.append(sorted(p.name for p in out.iterdir() if p.name.startswith(ASIDE_PREFIX)))
            return super().loss(outputs, targets, data)

    run(Watch(), {"train.epochs": 2, "seed": 5}, out, overwrite=True, quiet=True)
    assert seen[0] and not seen[-1]  # aside during epoch 1, gone after its checkpoint
    assert ckpt_io.load(out / "last.pt")["config"]["seed"] == 5
    assert _files(out) == ["best.pt", "config.yaml", "last.pt", "metrics.jsonl", "summary.json"]


def test_interrupted_overwrite_is_repaired_on_the_next_start(tmp_path):
    """A kill -9 between moving the old run aside and the first checkpoint: the next start
    (any of them) puts the old run back."""
    out = tmp_path / "r"
    run(ToyTask(), FAST, out, quiet=True)
    old = (out / "last.pt").read_bytes()
    aside = out / f"{ASIDE_PREFIX}12345"
    aside.mkdir()
    for name in _files(out):
        if not name.startswith("."):
            os.replace(out / name, aside / name)
    (out / "config.yaml").write_text("seed: 9\n")  # the killed run's partial files
    run(ToyTask(), {}, out, resume=True, quiet=True)  # resumes the restored, finished run
    assert (out / "last.pt").read_bytes() == old
    assert not aside.exists()


def test_config_without_checkpoint_restarts_cleanly(tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    (out / "config.yaml").write_text(
        "task: toy\nseed: 3\ntrain:\n  epochs: 2\n"
    )  # a run killed before its first checkpoint
    (out / "metrics.jsonl").write_text('{"epoch": 1, "tr')
    run(ToyTask(), FAST, out, quiet=True)  # no "holds another run"
    assert ckpt_io.load(out / "last.pt")["epoch"] == 1
    (out / "last.pt").unlink()
    (out / "best.pt").unlink()
    (out / "summary.json").unlink()
    # --resume of such a folder restarts from its config.yaml
    summary = run(ToyTask(), {}, out, resume=True, quiet=True)
    assert summary["epochs"] == 1


def test_resume_of_an_empty_folder_names_the_missing_checkpoint(tmp_path):
    with pytest.raises(RunError, match="nothing to resume"):
        run(ToyTask(), {}, tmp_path / "empty", resume=True, quiet=True)
    assert not (tmp_path / "empty").exists()  # created for the lock, removed again


def test_temp_files_of_interrupted_writes_are_removed(tmp_path):
    out = tmp_path / "r"
    run(ToyTask(), {"train.epochs": 2, "train.stop_after_epoch": 1}, out, quiet=True)
    (out / ".last.pt.abc123.tmp").write_bytes(b"x" * 4096)
    (out / ".summary.json.x.tmp").write_text("{")
    run(ToyTask(), {}, out, resume=True, quiet=True)
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_torn_metrics_tail_is_trimmed_on_resume(tmp_path):
    out = tmp_path / "r"
    run(ToyTask(), {"train.epochs": 3, "train.stop_after_epoch": 1}, out, quiet=True)
    with open(out / "metrics.jsonl", "a") as fh:
        fh.write('{"epoch": 2, "train_lo')  # killed mid-line
    run(ToyTask(), {}, out, resume=True, quiet=True)
    lines = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3]


def test_failed_fresh_run_leaves_no_folder_behind(tmp_path):
    out = tmp_path / "a" / "b"
    with pytest.raises(ValueError, match="bogus"):
        run(ToyTask(), {**FAST, "train.sched": "bogus"}, out, quiet=True)
    assert not (tmp_path / "a").exists()


def test_out_must_be_a_usable_folder(tmp_path):
    with pytest.raises(RunError, match="--out is empty"):
        run(ToyTask(), FAST, "", quiet=True)
    (tmp_path / "f").write_text("x")
    with pytest.raises(RunError, match="is a file, not a folder"):
        run(ToyTask(), FAST, tmp_path / "f", quiet=True)
    with pytest.raises(RunError, match="cannot create output folder"):
        run(ToyTask(), FAST, tmp_path / "f" / "sub", quiet=True)
    assert (tmp_path / "f").read_text() == "x"


def test_resume_may_only_change_the_epoch_count(tmp_path):
    out = tmp_path / "r"
    run(ToyTask(), {"train.epochs": 2, "train.stop_after_epoch": 1}, out, quiet=True)
    before = (out / "last.pt").read_bytes()
    for key, value in (("train.lr", 0.5), ("model.width", 32), ("mech.act", "raa")):
        with pytest.raises(ConfigError, match=rf"{key} is .* there, got {value!r}"):
            run(ToyTask(), {key: value}, out, resume=True, quiet=True)
    assert (out / "last.pt").read_bytes() == before
    run(ToyTask(), {"train.lr": 1e-2, "train.epochs": 3}, out, resume=True, quiet=True)  # same lr
    assert ckpt_io.load(out / "last.pt")["epoch"] == 3


def test_resume_cannot_shorten_a_run_below_its_epochs(tmp_path):
    out = tmp_path / "r"
    run(ToyTask(), {"train.epochs": 3, "train.stop_after_epoch": 2}, out, quiet=True)
    with pytest.raises(RunError, match="has trained 2 epochs; --epochs 1 would not continue"):
        run(ToyTask(), {"train.epochs": 1}, out, resume=True, quiet=True)


def test_checkpoint_of_another_model_is_named_before_loading(tmp_path):
    out = tmp_path / "r"
    run(ToyTask(), {"train.epochs": 2, "train.stop_after_epoch": 1}, out, quiet=True)
    state = torch.load(out / "last.pt", weights_only=True)
    state["model"] = {k.replace("hidden.0", "hidden.9"): v for k, v in state["model"].items()}
    state["model"]["model.head.weight"] = torch.zeros(3, 99)
    ckpt_io.save_atomic(state, out / "last.pt")
    with pytest.raises(
        ckpt_io.CheckpointError, match=r"model.head.weight is \(3, 99\) there, \(3, 16\) here"
    ):
        run(ToyTask(), {}, out, resume=True, quiet=True)


class _InterruptAt(ToyTask):
    """Raises KeyboardInterrupt at training step ``at`` (counted over the whole run)."""

    def __init__(self, at: int):
        super().__init__()
        self.at, self.steps = at, 0

    def loss(self, outputs, targets, data):
        self.steps += 1
        if self.steps == self.at:
            raise KeyboardInterrupt
        return super().loss(outputs, targets, data)


def test_ctrl_c_before_the_first_checkpoint(tmp_path):
    out = tmp_path / "r"
    with pytest.raises(RunInterrupted, match="before the first checkpoint; nothing was saved"):
        run(_InterruptAt(2), FAST, out, quiet=True)
    assert not out.exists()
    run(ToyTask(), FAST, out, quiet=True)
    before = (out / "last.pt").read_bytes()
    with pytest.raises(RunInterrupted, match="previous run in .* was restored"):
        run(_InterruptAt(2), FAST, out, overwrite=True, quiet=True)
    assert (out / "last.pt").read_bytes() == before


def test_ctrl_c_after_a_checkpoint_names_its_epoch(tmp_path):
    out = tmp_path / "r"
    with pytest.raises(RunInterrupted, match=r"last.pt holds epoch 1 \(continue with --resume"):
        run(_InterruptAt(6), {"train.epochs": 3}, out, quiet=True)  # 4 steps per epoch
    assert ckpt_io.load(out / "last.pt")["epoch"] == 1


def test_a_run_set_aside_is_not_a_finished_run(tmp_path):
    """compare --from and plot curves skip the hidden .replaced-* copy of an overwritten run."""
    from dnrt_core.tools.compare import load_summaries
    from dnrt_core.tools.plots import _run_folders

    out = tmp_path / "sweep" / "a"
    run(ToyTask(), FAST, out, quiet=True)
    aside = out / f"{ASIDE_PREFIX}1"
    aside.mkdir()
    for name in ("summary.json", "metrics.jsonl"):
        (aside / name).write_bytes((out / name).read_bytes())
    assert [s["_run_dir"] for s in load_summaries(tmp_path / "sweep")] == [str(out)]
    assert _run_folders([tmp_path / "sweep"]) == [out]
