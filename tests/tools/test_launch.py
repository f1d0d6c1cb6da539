"""Local parallel sweeps (``dnrt compare --jobs``): worker slots, a sweep with a killed
worker and its resume, Ctrl-C, the launch record of every run.

The end-to-end tests run tiny sweeps of the embedded default (image task, digits, ViT-Tiny,
a few samples, 1 epoch of 2 steps) through the real CLI in subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from dnrt_core.tools.launch import plan_slots

from .sweeps import REPO, TINY, alive, cli, env, pid_of

# --------------------------------------------------------------------------- slots


def test_plan_slots_cpu_share_and_gpu_round_robin() -> None:
    slots = plan_slots(3, "auto", cores=range(8), gpus=[])
    assert [s.threads for s in slots] == [2, 2, 2]
    assert [s.cores for s in slots] == [[0, 1], [2, 3], [4, 5]]  # disjoint shares
    assert all(s.device == "cpu" and s.env["OMP_NUM_THREADS"] == "2" for s in slots)
    assert "CUDA_VISIBLE_DEVICES" not in slots[0].env
    crowded = plan_slots(3, None, cores=[4, 5], gpus=[])
    assert [s.threads for s in crowded] == [1, 1, 1]
    assert [s.cores for s in crowded] == [[4], [5], [4]]
    gpu = plan_slots(3, "cuda", cores=range(6), gpus=["2", "5"])
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in gpu] == ["2", "5", "2"]
    assert [s.device for s in gpu] == ["cuda:2", "cuda:5", "cuda:2"]
    pinned = plan_slots(2, "cuda:1", cores=range(4), gpus=["0", "1"])  # explicit device: as asked
    assert [s.device for s in pinned] == ["cuda:1", "cuda:1"]
    assert all("CUDA_VISIBLE_DEVICES" not in s.env for s in pinned)
    assert plan_slots(2, "cpu", cores=range(4), gpus=["0"])[1].device == "cpu"
    with pytest.raises(ValueError, match="at least 1"):
        plan_slots(0)


def test_inline_runs_record_their_launch(tmp_path: Path, toy_plugin, one_thread) -> None:
    from dnrt_core.engine import run

    summary = run("toy", {"train.epochs": 1}, tmp_path / "r", quiet=True)
    record = json.loads((tmp_path / "r" / "summary.json").read_text())["launch"]
    assert record == summary["launch"]
    assert record["launcher"] == "inline" and record["pid"] == os.getpid()
    assert record["device"] == "cpu" and record["threads"] == 1 and record["host"]


# --------------------------------------------------------------------------- local workers


def _start_two_worker_sweep(out: Path) -> tuple[list[str], subprocess.Popen]:
    """``dnrt compare image`` of 3 tiny ViT runs with ``--jobs 2`` into ``out``, started in the
    background with piped output; returns its argv (to run again) and the process."""
    args = cli("compare", "image", "--acts", "gelu,dnrt,relu", "--models", "vit_tiny",
                "--out", str(out), "--jobs", "2", *TINY)  # fmt: skip
    proc = subprocess.Popen(args, cwd=REPO, env=env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    return args, proc


@pytest.mark.slow
def test_jobs_sweep_killed_worker_and_resume(tmp_path: Path) -> None:
    """--jobs 2: a worker killed with SIGKILL is reported in one line while the others
    finish; the same command again skips the finished runs and redoes the killed one."""
    out = tmp_path / "sweep"
    args, proc = _start_two_worker_sweep(out)
    err = []
    victim = None
    for line in proc.stderr:
        err.append(line)
        if "vit_tiny__dnrt__s0: running (pid" in line:
            victim = pid_of(line)
            os.kill(victim, signal.SIGKILL)
    stdout = proc.stdout.read()
    assert proc.wait(timeout=600) == 1, "".join(err)
    text = "".join(err)
    assert victim is not None
    assert "vit_tiny__dnrt__s0: failed (killed by SIGKILL)" in text
    assert "error: 1 of 3 runs failed: vit_tiny__dnrt__s0" in text
    assert "| vit_tiny |" in stdout and "dnrt" not in stdout.split("| vit_tiny |")[0]
    finished = sorted(p.parent.name for p in out.rglob("summary.json"))
    assert finished == ["vit_tiny__gelu__s0", "vit_tiny__relu__s0"]
    records = [json.loads((out / n / "summary.json").read_text())["launch"] for n in finished]
    assert {r["launcher"] for r in records} == {"local"} and {r["jobs"] for r in records} == {2}
    assert all(r["threads"] == max(1, len(os.sched_getaffinity(0)) // 2) for r in records)
    assert all(r["pid"] != os.getpid() for r in records)

    again = subprocess.run(args, cwd=REPO, env=env(), text=True, capture_output=True)
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("finished, skipped") == 2
    assert "vit_tiny__dnrt__s0: running" in again.stderr or "resuming" in again.stderr
    assert (out / "vit_tiny__dnrt__s0" / "summary.json").exists()
    header = next(ln for ln in again.stdout.splitlines() if ln.startswith("| model"))
    assert [c.strip() for c in header.strip("|").split("|")][1:] == ["relu", "gelu", "dnrt"]


@pytest.mark.slow
def test_ctrl_c_stops_every_worker(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    _, proc = _start_two_worker_sweep(out)
    pids = []
    err = []
    for line in proc.stderr:
        err.append(line)
        if ": running (pid" in line:
            pids.append(pid_of(line))
            if len(pids) == 2:
                proc.send_signal(signal.SIGINT)  # what Ctrl-C sends the CLI
    assert proc.wait(timeout=120) == 130, "".join(err)
    assert "interrupted; stopped 2 running worker(s)" in "".join(err)
    assert not any(alive(p) for p in pids)
    assert not list(out.rglob("summary.json"))


def test_bad_launch_options_fail_in_one_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cli import app

    base = ["compare", "image", "--acts", "gelu", "--models", "vit_tiny", "--out", str(tmp_path)]
    for extra, message in (
        (["--launcher", "slurmm"], "unknown launcher 'slurmm'"),
        (["--jobs", "0"], "--jobs must be at least 1"),
        (["--jobs", "2", "--slurm-partition", "gpu"], "need --launcher slurm"),
        (["--launcher", "submitit-local", "--slurm-time", "soon"], "--slurm-time 'soon'"),
    ):
        result = CliRunner().invoke(app, [*base, *extra])
        assert result.exit_code == 2, result.output
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())  # nothing ran, nothing was written
