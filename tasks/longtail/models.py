"""Models of the long-tail task: CIFAR ResNet-32 (He et al. 2016) and timm's ViT-Tiny.

The ResNet is written once as a plain module with an activation slot: every
activation call site is its own instance built by ``act_layer()``, so
:func:`dnrt_core.tune` can swap each one (RAA has per-site parameters).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

ActLayer = Callable[[], nn.Module]


class PadShortcut(nn.Module):
    """Parameter-free "option A" shortcut: stride-2 subsampling + zero channel padding."""

    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.stride = stride
        self.pad = out_ch - in_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C_out, H/stride, W/stride)."""
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))


class BasicBlock(nn.Module):
    """conv3x3-BN-act-conv3x3-BN, + shortcut, act. Two activation instances (``act1``, ``act2``)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, act_layer: ActLayer = nn.ReLU):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.act1 = act_layer()
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut = (
            PadShortcut(in_ch, out_ch, stride) if stride != 1 or in_ch != out_ch else nn.Identity()
        )
        self.act2 = act_layer()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C_out, H/stride, W/stride)."""
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32×32 images: 3 stages of n basic blocks with 16/32/64 channels.

    ``n=5`` is ResNet-32 (~0.46M parameters with the parameter-free shortcuts).
    The top-level children are ``conv1, bn1, act1, layer1, layer2, layer3, pool, fc``;
    ``layer3`` (the last child holding a Conv2d) is the default ARR site.
    """

    def __init__(self, num_blocks: int = 5, num_classes: int = 10, act_layer: ActLayer = nn.ReLU,
                 widths: tuple[int, int, int] = (16, 32, 64), in_chans: int = 3):  # fmt: skip
        super().__init__()
        self.num_classes = num_classes
        self.num_features = widths[-1]
        self.conv1 = nn.Conv2d(in_chans, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.act1 = act_layer()
        stages, in_ch = [], widths[0]
        for i, width in enumerate(widths):
            blocks = []
            for j in range(num_blocks):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(BasicBlock(in_ch, width, stride, act_layer))
                in_ch = width
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[-1], num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, 32, 32) -> (B, 64, 8, 8)."""
        x = self.act1(self.bn1(self.conv1(x)))
        return self.layer3(self.layer2(self.layer1(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> logits (B, num_classes)."""
        return self.fc(self.pool(self.forward_features(x)).flatten(1))


def resnet32(num_classes: int = 10, act_layer: ActLayer = nn.ReLU) -> CifarResNet:
    return CifarResNet(5, num_classes, act_layer)


def vit_tiny(num_classes: int = 10, img_size: int = 32, patch_size: int = 4,
             drop_path: float = 0.1, **kwargs) -> nn.Module:  # fmt: skip
    """timm ViT-Tiny (d=192, depth 12, 3 heads) at ``img_size`` px with ``patch_size`` patches,
    randomly initialised. Extra keyword arguments go to ``timm.create_model`` (e.g. ``depth``)."""
    import timm

    return timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=img_size, patch_size=patch_size,
        num_classes=num_classes, drop_path_rate=drop_path, **kwargs,
    )  # fmt: skip


MODELS = ("resnet32", "vit_tiny")
_RESNET = re.compile(r"resnet(\d+)$")


def check_model_name(name: str) -> str:
    """The canonical name (``vit_tiny`` or ``resnet{6n+2}``); ValueError listing valid names."""
    key = name.lower().replace("-", "_")
    if key in ("vit_tiny", "vit_tiny_patch4"):
        return "vit_tiny"
    match = _RESNET.match(key)
    if match and int(match.group(1)) >= 8 and (int(match.group(1)) - 2) % 6 == 0:
        return key
    raise ValueError(
        f"unknown long-tail model {name!r}; valid: {', '.join(MODELS)} (or resnet{{6n+2}})"
    )


def create_model(name: str, num_classes: int, *, img_size: int = 32, drop_path: float = 0.1,
                 act_layer: ActLayer = nn.ReLU, **kwargs) -> nn.Module:  # fmt: skip
    """``resnet32`` (or any CIFAR ``resnet{6n+2}``: 20, 44, 56, 110) or ``vit_tiny``."""
    key = check_model_name(name)
    if key == "vit_tiny":
        return vit_tiny(num_classes, img_size=img_size, drop_path=drop_path, **kwargs)
    return CifarResNet((int(key[len("resnet") :]) - 2) // 6, num_classes, act_layer)
