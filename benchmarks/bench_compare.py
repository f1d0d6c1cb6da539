"""Wall time of a 6-run ``dnrt compare`` sweep with ``--jobs 1`` and ``--jobs 2``, side by side.

Runs the embedded default (image task: digits, ViT-Tiny, 2 epochs) for three mechanisms x
two seeds, once one run at a time (``--jobs 1``: today's in-process loop, torch's default
threads) and once two worker processes at a time (``--jobs 2``: each pinned to its share of
the cores), each sweep in a fresh folder, through the real CLI in a subprocess. ``--rounds``
repeats the pair in alternating order. Pytest does not collect it. From the repository root:

    .venv/bin/python benchmarks/bench_compare.py
    .venv/bin/python benchmarks/bench_compare.py --epochs 1 --train-subset 256 --test-subset 128
    .venv/bin/python benchmarks/bench_compare.py --baseline-threads 1   # --jobs 1 on 1 thread
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def sweep(jobs: int, out: Path, args: argparse.Namespace) -> float:
    """Seconds one ``dnrt compare`` sweep takes, start to exit."""
    cmd = [
        sys.executable, "-c", "from cli import main; main()", "compare", "image",
        "--acts", args.acts, "--models", args.model, "--seeds", str(args.seeds),
        "--out", str(out), "--jobs", str(jobs),
    ]  # fmt: skip
    if args.epochs:
        cmd += ["--epochs", str(args.epochs)]
    for key in ("train_subset", "test_subset"):
        if getattr(args, key):
            cmd += ["--set", f"data.{key}={getattr(args, key)}"]
    env = dict(os.environ)
    if jobs == 1 and args.baseline_threads:  # e.g. 1: the baseline without OpenMP barriers
        env.update(OMP_NUM_THREADS=str(args.baseline_threads))
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"--jobs {jobs} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return seconds


def train_seconds(out: Path) -> float:
    return sum(json.loads(p.read_text())["train_time_s"] for p in out.rglob("summary.json"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--acts", default="gelu,dnrt,dpa")
    parser.add_argument("--model", default="vit_tiny")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--epochs", type=int, help="default: the task's (2)")
    parser.add_argument("--train-subset", type=int, help="default: all digits training images")
    parser.add_argument("--test-subset", type=int, help="default: all test images")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--baseline-threads",
        type=int,
        help="OMP_NUM_THREADS of the --jobs 1 sweep (default: torch's)",
    )
    args = parser.parse_args()
    runs = len(args.acts.split(",")) * args.seeds
    print(f"{runs}-run sweep: image/digits, {args.model}, mechanisms {args.acts}, "
          f"{args.seeds} seeds, epochs {args.epochs or 'default'}, train_subset "
          f"{args.train_subset or 'all'}, test_subset {args.test_subset or 'all'}; "
          f"--jobs 1 threads {args.baseline_threads or 'default'}; {os.cpu_count()} CPUs; "
          f"load average {os.getloadavg()[0]:.2f} at start", flush=True)  # fmt: skip
    times: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory(prefix="bench_compare_") as tmp:
        for r in range(args.rounds):
            for jobs in (1, 2) if r % 2 == 0 else (2, 1):
                out = Path(tmp) / f"r{r}_jobs{jobs}"
                load = os.getloadavg()[0]
                seconds = sweep(jobs, out, args)
                times[jobs].append(seconds)
                after = os.getloadavg()[0]
                print(f"round {r + 1} --jobs {jobs}: {seconds:7.1f} s wall, "
                      f"{train_seconds(out):7.1f} s summed train time, "
                      f"load average {load:.2f} -> {after:.2f}", flush=True)  # fmt: skip
    one, two = statistics.median(times[1]), statistics.median(times[2])
    print(f"median wall: --jobs 1 {one:.1f} s, --jobs 2 {two:.1f} s, ratio {two / one:.3f}x "
          f"(target <= 0.6x); load average {os.getloadavg()[0]:.2f} at end")  # fmt: skip


if __name__ == "__main__":
    main()
