"""A tiny third-party-style task used by the engine and plugin tests (seconds to train)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import TensorDataset

from dnrt_core import ConfigOption, Task, TaskData, make_loader


class ToyNet(nn.Module):
    """(B, 8) -> (B, num_classes) MLP with two hidden layers named ``hidden.0`` / ``hidden.1``."""

    def __init__(self, num_classes: int = 3, width: int = 16):
        super().__init__()
        self.num_classes = num_classes
        self.hidden = nn.Sequential(
            nn.Sequential(nn.Linear(8, width), nn.GELU()),
            nn.Sequential(nn.Linear(width, width), nn.Dropout(0.1), nn.GELU()),
        )
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.hidden(x))


class ToyTask(Task):
    name = "toy"
    description = "three gaussian blobs in 8-D (test plugin)"
    options = (
        ConfigOption("width", "model.width", int, "Hidden width of the MLP."),
        # declared here only: the option makes data.spread a config key (default 2.0)
        ConfigOption("spread", "data.spread", float, "Distance of the blob centres.", 2.0),
    )

    def default_config(self) -> dict[str, Any]:
        return {
            "data": {
                "dataset": "blobs",
                "n": 192,
                "classes": 3,
                "batch_size": 32,
                "nan_at_step": None,
                "bad_label": False,
            },
            "model": {"name": "mlp", "width": 16},
            "train": {"epochs": 2, "lr": 1e-2},
            "mech": {"arr_sites": "hidden.*", "arr_pool": "node"},
        }

    def setup(self, cfg: dict[str, Any], *, device: torch.device) -> TaskData:
        gen = torch.Generator().manual_seed(1234)
        n = int(cfg["data"]["n"])
        k = int(cfg["data"]["classes"])
        y = torch.arange(n) % k
        spread = float(cfg["data"]["spread"])
        x = torch.randn(n, 8, generator=gen) + spread * nn.functional.one_hot(y, 8).float()
        if cfg["data"]["bad_label"]:
            y = y.clone()
            y[5] = k  # out of range
        train = TensorDataset(x[: n * 3 // 4], y[: n * 3 // 4])
        test = TensorDataset(x[n * 3 // 4 :], y[n * 3 // 4 :])
        bs = int(cfg["data"]["batch_size"])
        return TaskData(
            num_classes=k,
            train=make_loader(train, bs, train=True, seed=int(cfg["seed"])),
            splits={
                "val": make_loader(test, bs, train=False),
                "test": make_loader(test, bs, train=False),
            },
            info={"toy": True},
            state={"nan_at_step": cfg["data"]["nan_at_step"], "step": 0},
        )

    def build_model(self, cfg: dict[str, Any], data: TaskData) -> nn.Module:
        return ToyNet(data.num_classes, int(cfg["model"]["width"]))

    def loss(self, outputs, targets, data):
        loss = super().loss(outputs, targets, data)
        data.state["step"] += 1
        if (
            data.state["nan_at_step"] is not None
            and data.state["step"] >= data.state["nan_at_step"]
        ):
            loss = loss * float("nan")
        return loss
