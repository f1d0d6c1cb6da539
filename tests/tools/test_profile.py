"""Params / FLOPs / latency with and without DNRT (paper Table 4)."""

from __future__ import annotations

import copy

import pytest
import timm
import torch
from torch import nn

from dnrt_core.tools.profile import count_flops, format_profile_table, profile_mechanisms

pytestmark = pytest.mark.usefixtures("one_thread")


def _vit_tiny() -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=4, num_classes=10)


class _Fn(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def test_counter_counts_matvec_and_cpu_attention() -> None:
    x, w = torch.randn(2, 65, 768), torch.randn(768)
    total, per_op = count_flops(_Fn(lambda t: torch.matmul(t, w)), x)
    assert total == 2 * 2 * 65 * 768 and set(per_op) == {"aten.mv"}
    q = torch.randn(2, 3, 65, 64)
    total, _ = count_flops(_Fn(lambda t: nn.functional.scaled_dot_product_attention(t, t, t)), q)
    assert total == 2 * (2 * 2 * 3 * 65 * 65 * 64)  # QK^T and AV, 2 FLOPs per MAC


def test_vit_tiny_dnrt_flops_are_exactly_the_raa_matvecs() -> None:
    batch = 1
    vit = _vit_tiny()  # built once; each mechanism gets a fresh copy
    rows = profile_mechanisms(
        lambda: copy.deepcopy(vit), torch.randn(batch, 3, 32, 32), 10, repeats=0
    )
    by = {r.mechanism: r for r in rows}
    assert list(by) == ["baseline", "raa", "dnrt", "dpa"]
    tokens, depth, hidden = 65, 12, 768  # (32/4)^2 + class token; 4·192 MLP features
    # s = w·x per token per block: one (tokens, 768) x (768,) matvec, 2 FLOPs per MAC
    assert by["raa"].flops - by["baseline"].flops == 2 * hidden * tokens * depth * batch
    assert by["dnrt"].flops == by["raa"].flops  # ARR costs nothing at inference
    assert by["dpa"].flops == by["baseline"].flops  # TAU is elementwise: no FLOPs
    assert by["dnrt"].params - by["baseline"].params == depth * (hidden + 1)
    assert by["dpa"].params == by["baseline"].params  # DPA is parameter-free
    # the paper's claim: negligible overhead (Table 4: 1.078 G -> 1.080 G)
    assert by["dnrt"].flops / by["baseline"].flops < 1.002
    assert by["baseline"].latency_ms is None


def test_cnn_dnrt_flops_and_latency() -> None:
    def small_cnn() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(16, 4),
        )

    x = torch.randn(3, 3, 8, 8)
    rows = profile_mechanisms(
        small_cnn,
        x,
        4,
        mechanisms=("baseline", "dnrt", "gelu+arr"),
        baseline_act="relu",
        repeats=2,
        warmup=1,
    )
    by = {r.mechanism: r for r in rows}
    # RAA on (B, C, H, W): one shift per pixel over C channels -> 2·C FLOPs per pixel
    assert by["dnrt"].flops - by["baseline"].flops == 2 * 3 * 64 * (8 + 16)
    assert by["gelu+arr"].flops == by["baseline"].flops and by["gelu+arr"].arr
    assert by["baseline"].act == "relu"
    for r in rows:
        assert r.latency_ms > 0 and r.train_step_ms > 0 and r.batch_size == 3
    table = format_profile_table(rows)
    lines = table.splitlines()
    assert lines[0].startswith("| mechanism |") and len(lines) >= 2 + len(rows)
    base_line = next(line for line in lines if line.startswith("| baseline"))
    assert "| relu |" in base_line and "| 1.0000 |" in base_line and "| 1.00 |" in base_line
    dnrt_line = next(line for line in lines if line.startswith("| dnrt"))
    assert "| +26 |" in dnrt_line  # two RAA: (8 + 1) + (16 + 1) parameters
