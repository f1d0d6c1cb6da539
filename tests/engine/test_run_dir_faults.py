"""Run folders under real faults: two runs at once, kill -9 at random points (before the
first checkpoint too, and during --overwrite), Ctrl-C, a full disk (a small tmpfs)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from dnrt_core.engine import RunDir
from dnrt_core.engine import checkpoint as ckpt_io
from dnrt_core.engine.run_dir import ASIDE_PREFIX, LOCK_NAME

DNRT = [sys.executable, "-c", "from cli import main; main()"]
#: a toy run whose epochs take a moment (72 steps each, with ARR)
SLOW = ["--quiet", "--act", "dnrt", "--set", "data.n=1536", "--set", "data.batch_size=16"]


def _start(out: Path, *extra: str) -> subprocess.Popen:
    args = [*DNRT, "train", "toy", "--out", str(out), *SLOW, *extra]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait_for(proc: subprocess.Popen, condition, timeout: float = 120.0) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def _leftovers(out: Path) -> list[str]:
    return [p.name for p in out.iterdir() if p.name.endswith(".tmp") or p.name == LOCK_NAME
            or p.name.startswith(ASIDE_PREFIX)]  # fmt: skip


def _epochs(out: Path) -> list[int]:
    return [json.loads(ln)["epoch"] for ln in (out / "metrics.jsonl").read_text().splitlines()]


def test_second_run_into_a_busy_folder_is_refused(tmp_path, toy_plugin):
    out = tmp_path / "r"
    first = _start(out, "--epochs", "200")
    try:
        assert _wait_for(first, lambda: (out / "config.yaml").exists()), first.stderr.read()
        second = subprocess.run(
            [*DNRT, "train", "toy", "--out", str(out), "--quiet", "--epochs", "1", "--seed", "2"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert first.poll() is None  # still training
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert second.returncode == 2, second.stderr
    lines = second.stderr.strip().splitlines()
    assert lines == [
        f"error: output folder {out} is in use by another dnrt run (pid {first.pid}); "
        "wait for it to finish or choose another --out"
    ]
    # the killed holder's lock is taken over; one run's epochs, in order
    again = ["--resume"] if (out / "last.pt").exists() or (out / "config.yaml").exists() else []
    trained = ckpt_io.load(out / "last.pt")["epoch"] if (out / "last.pt").exists() else 0
    done = subprocess.run(
        [*DNRT, "train", "toy", "--out", str(out), *SLOW, "--epochs", str(trained + 1), *again],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    epochs = _epochs(out)
    assert epochs == list(range(1, len(epochs) + 1))
    assert _leftovers(out) == []


def test_kill_9_at_random_points(tmp_path, toy_plugin):
    """Kills before the lock, before config.yaml, around the first checkpoint and later;
    after each, the folder is never a dead end and last.pt, when there, always loads."""
    out = tmp_path / "r"
    rng = random.Random(20)
    markers = [LOCK_NAME, "config.yaml", "metrics.jsonl", "last.pt", "last.pt"]
    for marker in markers:
        resume = (out / "last.pt").exists() or (out / "config.yaml").exists()
        proc = _start(out, "--epochs", "6", *(["--resume"] if resume else []))
        _wait_for(proc, lambda m=marker: (out / m).exists())
        time.sleep(rng.uniform(0.0, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if (out / "last.pt").exists():
            assert ckpt_io.load(out / "last.pt")["epoch"] >= 1
    resume = (out / "last.pt").exists() or (out / "config.yaml").exists()
    done = subprocess.run(
        [*DNRT, "train", "toy", "--out", str(out), *SLOW, "--epochs", "6",
         *(["--resume"] if resume else [])],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert ckpt_io.load(out / "last.pt")["epoch"] == 6
    assert _epochs(out) == [1, 2, 3, 4, 5, 6]
    assert json.loads((out / "summary.json").read_text())["epochs"] == 6
    assert _leftovers(out) == []


def test_kill_9_during_overwrite_keeps_one_whole_run(tmp_path, toy_plugin):
    out = tmp_path / "r"
    result = CliRunner().invoke(app, ["train", "toy", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    old = (out / "last.pt").read_bytes()

    def aside() -> list[Path]:
        return list(out.glob(ASIDE_PREFIX + "*"))

    # killed at once (old run restored), at a random moment, after the first checkpoint (new run)
    for when in ("moved aside", "random", "checkpointed"):
        proc = _start(out, "--overwrite", "--epochs", "4", "--seed", "7")
        assert _wait_for(proc, lambda: bool(aside()))
        if when == "random":
            time.sleep(random.Random(3).uniform(0.0, 1.5))
        elif when == "checkpointed":
            _wait_for(proc, lambda: not aside())
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        folder = RunDir(out)
        folder.acquire()  # what the next start of any run into it does first
        folder.release()
        seed = ckpt_io.load(out / "last.pt")["config"]["seed"]
        assert not aside() and _leftovers(out) == []
        if when == "moved aside":
            assert (out / "last.pt").read_bytes() == old
        if when == "checkpointed":
            assert seed == 7
        assert (out / "last.pt").read_bytes() == old or seed == 7


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupt_names_what_is_left(tmp_path, toy_plugin, sig):
    out = tmp_path / "r"
    proc = _start(out, "--epochs", "3", "--set", "data.n=6000")
    assert _wait_for(proc, lambda: (out / "config.yaml").exists())
    proc.send_signal(sig)
    err = proc.communicate(timeout=120)[1].strip().splitlines()
    assert proc.returncode == 130
    assert len(err) == 1 and "Traceback" not in err[0]
    if (out / "last.pt").exists():  # epoch 1 ended before the signal
        epoch = ckpt_io.load(out / "last.pt")["epoch"]
        assert f"last.pt holds epoch {epoch} (continue with --resume --out {out})" in err[0]
    else:
        assert err[0] == (
            f"error: interrupted before the first checkpoint; nothing was saved in {out}"
        )
        assert not out.exists()


# --------------------------------------------------------------------------- disk full


def _mount_tmpfs(mount: Path, options: str) -> None:
    """Mount a tmpfs (needs root); skip, with the reason, where it cannot be mounted."""
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs for the disk tests needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip() or done.returncode}")


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs."""
    _mount_tmpfs(tmp_path / "disk", "size=2m")
    yield tmp_path / "disk"
    subprocess.run(["umount", "-l", str(tmp_path / "disk")], check=False)


def test_out_on_a_read_only_disk(tmp_path, toy_plugin):
    _mount_tmpfs(tmp_path / "ro", "ro,size=1m")
    try:
        result = _train(tmp_path / "ro" / "r", "--epochs", "1")
    finally:
        subprocess.run(["umount", "-l", str(tmp_path / "ro")], check=False)
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == (
        f"error: cannot create output folder {tmp_path / 'ro' / 'r'}: Read-only file system"
    )


def _fill(mount: Path, leave: int) -> Path:
    """Fill the disk up to ``leave`` free bytes."""
    filler = mount / "filler"
    free = os.statvfs(mount).f_bavail * os.statvfs(mount).f_frsize
    with open(filler, "wb") as fh:
        fh.write(b"\0" * max(free - leave, 0))
    return filler


BIG = ["--set", "model.width=96"]  # checkpoints of ~0.2 MB


def _train(out: Path, *extra: str):
    return CliRunner().invoke(app, ["train", "toy", "--out", str(out), "--quiet", *BIG, *extra])


def _one_line_env_error(result, pattern: str) -> str:
    assert result.exit_code == 1, result.output
    err = result.stderr.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in result.output, result.output
    assert err[0].startswith("error: No space left on device") and pattern in err[0], err[0]
    return err[0]


def test_disk_full_on_a_fresh_run(small_disk, toy_plugin):
    _fill(small_disk, 24 * 1024)
    out = small_disk / "r"
    _one_line_env_error(_train(out, "--epochs", "1"), f"nothing was saved in {out}")
    assert not out.exists()  # the folder it created is gone, no temp file left


def test_disk_full_on_resume_keeps_the_last_checkpoint(small_disk, toy_plugin):
    out = small_disk / "r"
    assert _train(out, "--epochs", "3", "--set", "train.stop_after_epoch=1").exit_code == 0
    filler = _fill(small_disk, 16 * 1024)
    line = _one_line_env_error(_train(out, "--resume"), f"{out / 'last.pt'} keeps epoch 1")
    assert "while writing" in line
    assert ckpt_io.load(out / "last.pt")["epoch"] == 1
    assert _leftovers(out) == []
    filler.unlink()
    assert _train(out, "--resume").exit_code == 0  # space again: it finishes
    assert _epochs(out) == [1, 2, 3]


def test_disk_full_on_overwrite_restores_the_old_run(small_disk, toy_plugin):
    out = small_disk / "r"
    assert _train(out, "--epochs", "1").exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    _fill(small_disk, 24 * 1024)
    _one_line_env_error(_train(out, "--epochs", "1", "--overwrite", "--seed", "4"), "restored")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
