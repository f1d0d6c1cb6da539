"""Helpers of the sweep-launcher tests: tiny runs of the embedded default through the CLI."""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TINY = ["--epochs", "1", "--set", "data.train_subset=40", "--set", "data.test_subset=40",
        "--set", "train.max_steps_per_epoch=2", "--set", "data.batch_size=16"]  # fmt: skip
TINY_OVERRIDES = {"train.epochs": 1, "data.train_subset": 40, "data.test_subset": 40,
                  "train.max_steps_per_epoch": 2, "data.batch_size": 16}  # fmt: skip


def cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from cli import main; main()", *args]


def env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path}


def pid_of(line: str) -> int:
    return int(line.split("(pid ")[1].split(",")[0])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
