"""Two-process gloo DDP on CPU via torchrun: trains, ARR/DPA memories agree, rank 0 writes."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("act", ["dnrt", "dpa"])
def test_two_process_gloo(tmp_path, toy_plugin, act):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           str(REPO / "cli.py"), "train", "toy", "--act", act, "--epochs", "2", "--quiet",
           "--out", str(out), "--device", "cpu", "--set", "mech.dpa_interval=1"]  # fmt: skip
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2
    assert summary["memories_in_sync"] is True
    state = torch.load(out / "last.pt", weights_only=True)
    memories = {k: v for k, v in state["model"].items() if "memory" in k}
    assert memories and all(v.abs().sum() > 0 for v in memories.values())
    # only rank 0 wrote: the run folder holds one set of files, nothing else appeared
    names = sorted(p.name for p in out.iterdir())
    assert names == ["best.pt", "config.yaml", "last.pt", "metrics.jsonl", "summary.json"]
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp", "site"]
