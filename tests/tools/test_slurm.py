"""Sweeps as submitit jobs (``dnrt compare --launcher slurm | submitit-local |
submitit-debug``): option mapping, the Slurm job-array path through stand-ins for
sbatch / srun / sacct, submitit's local and debug executors, DDP in a job of two tasks."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from dnrt_core.tools import compare, launch, slurm
from dnrt_core.tools.slurm import SlurmOptions, parse_slurm_time

from .sweeps import REPO, TINY, TINY_OVERRIDES, cli, env


def test_parse_slurm_time() -> None:
    assert parse_slurm_time(90) == 90
    assert parse_slurm_time("1:30:00") == 90
    assert parse_slurm_time("30:30") == 31  # MM:SS, rounded up
    assert parse_slurm_time("2-00") == 2880
    assert parse_slurm_time("1-02:03:04") == 1 * 1440 + 2 * 60 + 4
    for bad in ("abc", "0", "1:2:3:4", "-5"):
        with pytest.raises(ValueError, match="slurm-time"):
            parse_slurm_time(bad)


def test_slurm_options_reach_the_sbatch_file(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("submitit")
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "srun").write_text("#!/bin/sh\nexit 1\n")  # submitit looks for srun to detect Slurm
    (fake / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    options = SlurmOptions(partition="gpu", gpus_per_job=2, time="2:00:00", account="lab",
                           parallelism=4, extra={"qos": "high", "mem_gb": 32,
                                                 "setup": ["module load cuda"]})  # fmt: skip
    executor = slurm.make_executor("slurm", tmp_path / "jobs", options, name="dnrt-image")
    text = executor._executor._make_submission_file_text("python -m x", "uid")
    flags = ["--partition=gpu", "--account=lab", "--time=120", "--gpus-per-node=2",
             "--ntasks-per-node=2", "--qos=high", "--mem=32GB",
             "--job-name=dnrt-image"]  # fmt: skip
    for flag in flags:
        assert f"#SBATCH {flag}" in text, flag
    assert "module load cuda" in text
    with pytest.raises(ValueError, match="submitit rejected"):
        slurm.make_executor("slurm", tmp_path, SlurmOptions(extra={"no_such_flag": 1}), "x")


def test_slurm_config_section(tmp_path: Path) -> None:
    good = tmp_path / "cluster.yaml"
    good.write_text("slurm:\n  qos: high\n  setup: [source .venv/bin/activate]\n")
    assert slurm.load_slurm_config(good) == {"qos": "high", "setup": ["source .venv/bin/activate"]}
    bad = tmp_path / "bad.yaml"
    bad.write_text("qos: high\n")
    with pytest.raises(ValueError, match="slurm:"):
        slurm.load_slurm_config(bad)


# --------------------------------------------------------------------------- submitit


@pytest.mark.slow
def test_submitit_local_submit_resubmit_and_table(tmp_path: Path) -> None:
    """Submit without waiting, re-submit while the jobs run (nothing is submitted twice),
    then ``--from`` builds the table once the jobs are done and a re-submit skips them."""
    pytest.importorskip("submitit")
    out = tmp_path / "sweep"
    args = cli("compare", "image", "--acts", "gelu,dnrt", "--models", "vit_tiny", "--out",
                str(out), "--launcher", "submitit-local", "--slurm-time", "10", *TINY)  # fmt: skip
    first = subprocess.run(args, cwd=REPO, env=env(), text=True, capture_output=True)
    assert first.returncode == 0, first.stderr
    assert first.stderr.count("submitted as job") == 2 and "--from" in first.stderr
    jobs = {json.loads(p.read_text())["job_id"] for p in out.rglob("job.json")}
    assert len(jobs) == 2
    plan = compare.plan_sweep("image", ["gelu", "dnrt"], ["vit_tiny"], 1, out, TINY_OVERRIDES)
    early = slurm.submit(plan, "image", SlurmOptions(), launcher="submitit-local", progress=False)
    assert len(early.pending) + len(early.summaries) == 2  # running jobs are not resubmitted
    assert {job for _, job in early.pending} <= jobs
    assert {json.loads(p.read_text())["job_id"] for p in out.rglob("job.json")} == jobs
    deadline = time.monotonic() + 600
    while len(list(out.rglob("summary.json"))) < 2 and time.monotonic() < deadline:
        time.sleep(1)
    table = subprocess.run(cli("compare", "image", "--from", str(out)), cwd=REPO, env=env(),
                           text=True, capture_output=True)  # fmt: skip
    assert table.returncode == 0, table.stderr
    assert "gelu" in table.stdout and "dnrt" in table.stdout
    for summary in out.rglob("summary.json"):
        record = json.loads(summary.read_text())["launch"]
        assert record["launcher"] == "submitit-local" and record["job_id"] in jobs
        assert record["job_id"] == json.loads((summary.parent / "job.json").read_text())["job_id"]
    again = slurm.submit(plan, "image", SlurmOptions(), launcher="submitit-local", progress=False)
    assert not again.pending and len(again.summaries) == 2


@pytest.mark.slow
def test_slurm_job_array_through_stand_in_sbatch(tmp_path: Path, toy_plugin, monkeypatch) -> None:
    """The Slurm path end to end, with stand-ins for sbatch / srun / sacct
    (tests/tools/fake_slurm) that run the batch script locally: a job array is submitted,
    a re-submit while it runs submits nothing, --from builds the table, and each summary
    names its array job."""
    pytest.importorskip("submitit")
    from typer.testing import CliRunner

    from cli import app

    monkeypatch.setenv("PATH", f"{Path(__file__).parent / 'fake_slurm'}{os.pathsep}"
                               f"{os.environ['PATH']}")  # fmt: skip
    monkeypatch.setenv("FAKE_SLURM_STATE", str(tmp_path / "slurm"))
    out = tmp_path / "sweep"
    args = ["compare", "toy", "--acts", "gelu,dnrt", "--models", "mlp", "--out", str(out),
            "--epochs", "1", "--device", "cpu", "--launcher", "slurm", "--jobs", "2",
            "--slurm-partition", "short", "--slurm-time", "0:30:00"]  # fmt: skip
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert first.stderr.count("submitted as job 1000_") == 2 and "--from" in first.stderr
    text = next((out / "submitit").glob("*submission*.sh")).read_text()  # one per array task
    for flag in ("--array=0-1%2", "--partition=short", "--time=30", "--ntasks-per-node=1"):
        assert f"#SBATCH {flag}" in text, flag
    again = CliRunner().invoke(app, args)  # the jobs are still running: nothing new
    assert again.exit_code == 0, again.output
    assert again.stderr.count("already queued as job 1000_") == 2
    deadline = time.monotonic() + 600
    while len(list(out.rglob("summary.json"))) < 2 and time.monotonic() < deadline:
        time.sleep(1)
    table = CliRunner().invoke(app, ["compare", "toy", "--from", str(out)])
    assert table.exit_code == 0, table.output
    assert "gelu" in table.stdout and "dnrt" in table.stdout
    ids = sorted(json.loads(p.read_text())["launch"]["job_id"] for p in out.rglob("summary.json"))
    assert ids == ["1000_0", "1000_1"]
    assert {json.loads(p.read_text())["launch"]["launcher"] for p in out.rglob("summary.json")} == {
        "slurm"
    }
    done = CliRunner().invoke(app, args)  # everything finished: the table, no new job
    assert done.exit_code == 0, done.output
    assert done.stderr.count("finished, skipped") == 2 and "| mlp |" in done.stdout


@pytest.mark.slow
def test_submitit_job_of_two_tasks_trains_one_run_with_ddp(tmp_path: Path, toy_plugin) -> None:
    """A job with several tasks (what --slurm-gpus-per-job G asks for) is one DDP run."""
    pytest.importorskip("submitit")
    plan = compare.plan_sweep("toy", ["dnrt"], ["mlp"], 1, tmp_path / "s",
                              {"train.epochs": 1, "device": "cpu"})  # fmt: skip
    options = SlurmOptions(time="10", extra={"tasks_per_node": 2})
    result = slurm.submit(plan, "toy", options, launcher="submitit-local", wait=True,
                          progress=False)  # fmt: skip
    assert not result.failed
    [summary] = result.summaries
    assert summary["world_size"] == 2 and summary["memories_in_sync"] is True
    assert summary["launch"]["launcher"] == "submitit-local"


def test_submitit_debug_reports_a_failed_run(tmp_path: Path, toy_plugin, one_thread) -> None:
    """The debug executor runs the jobs in this process; a bad run fails in one line (no pdb)."""
    pytest.importorskip("submitit")
    plan = compare.plan_sweep("toy", ["gelu", "dnrt"], ["mlp"], 1, tmp_path / "s",
                              {"train.epochs": 1})  # fmt: skip
    plan[1].overrides["data.no_such_key"] = 1  # this run fails: unknown config key
    result = launch.launch_plan(plan, "toy", launcher="submitit-debug", progress=False)
    assert [s["mechanism"] for s in result.summaries] == ["gelu"]
    assert result.summaries[0]["launch"]["launcher"] == "submitit-debug"
    assert result.summaries[0]["launch"]["job_id"].startswith("DEBUG_")
    [(item, reason)] = result.failed
    assert item.name == "mlp__dnrt__s0" and "unknown config key" in reason and "\n" not in reason
    plan[1].overrides.pop("data.no_such_key")
    rerun = launch.launch_plan(plan, "toy", launcher="submitit-debug", progress=False)
    assert not rerun.failed and len(rerun.summaries) == 2
