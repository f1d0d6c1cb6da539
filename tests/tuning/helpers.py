"""Helpers shared by the tuning tests."""

from __future__ import annotations

import io
import warnings

import timm
import torch
import torch.nn.functional as F
from torch import nn


def tune_warnings(fn, *args, **kwargs) -> list[str]:
    """Run ``fn`` and return the dnrt.tune warnings it raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn(*args, **kwargs)
    return [str(w.message) for w in caught if "dnrt.tune" in str(w.message)]


def count_modules(model: nn.Module, cls: type) -> int:
    return sum(isinstance(m, cls) for m in model.modules())


def roundtrip(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def train_steps(tuned, inputs, targets, steps: int, lr: float = 1e-2):
    opt = torch.optim.SGD(tuned.parameters(), lr=lr)
    tuned.train()
    aux = []
    for _ in range(steps):
        out = tuned(*inputs, targets=targets)
        loss = F.cross_entropy(out, targets.clamp(min=0)) + tuned.aux_loss()
        aux.append(float(tuned.aux_loss()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return aux


def make_vit(**kwargs):
    torch.manual_seed(0)
    return timm.create_model(
        "vit_tiny_patch16_224", img_size=32, patch_size=4, num_classes=10, **kwargs
    )
