"""Image model zoo: the DNRT paper's transformers and CNNs, sized for CIFAR (32 px).

    >>> model = create_image_model("vit_tiny", num_classes=10)          # timm ViT, img 32, patch 4
    >>> tuned = dnrt_core.tune(model, act="raa", arr=True)               # the paper's DNRT ViT

Every model is built from the ecosystem (timm / torchvision), never with
pretrained weights, and carries an integer ``num_classes`` attribute.

Below 224 px the models use the small-image (CIFAR) configurations:

* transformers: patch 4 instead of 16 (``vit_tiny``, ``deit_tiny``, ``cait_xxs``);
  ``tnt_s`` uses outer patch 4 with a stride-1 pixel embedding, so each patch
  keeps 4x4 inner "pixels" as TNT-S does at 224 (patch 16, stride 4); ``pvt_tiny``
  (timm ``pvt_v2_b0``: its stride-4 patch embedding already suits 32 px) uses
  spatial-reduction ratios 1 because the default (8, 4, 2, 1) would shrink
  every stage's keys to a single token at 32 px.
* CNNs: ``resnet18`` with the CIFAR stem (3x3 stride-1 conv, no max-pool);
  ``alexnet`` the common 5-conv CIFAR AlexNet; ``vgg11`` torchvision's
  ``vgg11_bn`` features with a linear classifier; ``mobilenet`` torchvision's
  ``mobilenet_v2`` with the first conv and the first stride-2 block at stride 1
  (32 -> 4 px, as ResNet-18); ``shufflenet`` torchvision's ``shufflenet_v2_x1_0``
  with a stride-1 first conv and no max-pool.

The smallest size is 16 px (the embedded digits demo: ViT-Tiny sees 16 patches), 32 px
for ``pvt_tiny`` and ``vgg11``. At ``img_size >= 224`` the native ImageNet configurations
are used (patch 16, ImageNet stems). ``deit_tiny`` and ``vit_tiny`` share the architecture; DeiT
differs only in its training recipe.

ARR sites (``dnrt_core.tune``'s defaults): every transformer block (``blocks.*``,
PVT ``stages.*.blocks.*``); for CNNs the last feature stage (``layer4``,
``features``, ``conv5``). VGG's and AlexNet's flat ``features`` are grouped into
stages ending at each max-pool, so ``features.<last>`` is the last block that
DPA acts on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import timm
import torch
import torchvision
from timm.models import cait as timm_cait
from timm.models import tnt as timm_tnt
from torch import nn

from dnrt_core.errors import unknown_name_error

#: at or above this size the native ImageNet configurations are used
NATIVE_SIZE = 224
#: smallest supported image size (PVT and VGG, with five 2x reductions, need 32)
MIN_SIZE = 16

ActLayer = type[nn.Module] | None


@dataclass(frozen=True)
class ImageModelSpec:
    """One registry entry: ``build(num_classes, img_size, drop_path, act_layer, in_chans)``."""

    build: Callable[..., nn.Module]
    kind: str  # "transformer" | "cnn"
    summary: str
    min_size: int = MIN_SIZE  # smallest img_size the model takes


# --------------------------------------------------------------------------- helpers


def _replace_activations(
    model: nn.Module, act_layer: ActLayer, types: tuple[type[nn.Module], ...]
) -> nn.Module:
    """Replace every module of ``types`` by a fresh ``act_layer()`` (one instance per site)."""
    if act_layer is None:
        return model
    modules = model.named_modules(remove_duplicate=False)
    names = [n for n, m in modules if n and isinstance(m, types)]
    for name in names:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, act_layer())
    return model


def _conv_like(
    conv: nn.Conv2d, in_chans: int | None = None, stride: int | None = None
) -> nn.Conv2d:
    """A freshly initialised copy of ``conv`` with another input width and/or stride."""
    new = nn.Conv2d(
        conv.in_channels if in_chans is None else in_chans,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride if stride is None else stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=conv.bias is not None,
    )
    nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
    if new.bias is not None:
        nn.init.zeros_(new.bias)
    return new


def _split_at_pools(layers: nn.Sequential) -> nn.Sequential:
    """Group a flat conv stack into stages, each ending at a max-pool."""
    stages, current = [], []
    for layer in layers:
        current.append(layer)
        if isinstance(layer, nn.MaxPool2d):
            stages.append(nn.Sequential(*current))
            current = []
    if current:
        stages.append(nn.Sequential(*current))
    return nn.Sequential(*stages)


def _timm_kwargs(drop_path: float, act_layer: ActLayer, in_chans: int) -> dict:
    kwargs: dict = {"pretrained": False, "drop_path_rate": drop_path, "in_chans": in_chans}
    if act_layer is not None:
        kwargs["act_layer"] = act_layer
    return kwargs


def _check_patch(img_size: int, patch: int, name: str) -> None:
    if img_size % patch:
        raise ValueError(f"{name}: img_size {img_size} is not a multiple of the patch size {patch}")


# --------------------------------------------------------------------------- transformers


def _vit_like(timm_name: str, display: str, **extra):
    def build(num_classes, img_size, drop_path, act_layer, in_chans):
        patch = 16 if img_size >= NATIVE_SIZE else 4
        _check_patch(img_size, patch, display)
        return timm.create_model(
            timm_name,
            num_classes=num_classes,
            img_size=img_size,
            patch_size=patch,
            **_timm_kwargs(drop_path, act_layer, in_chans),
            **extra,
        )

    return build


class TalkingHeadAttention(timm_cait.TalkingHeadAttn):
    """timm CaiT's talking-heads attention, named so ``dnrt_core`` sees an attention model.

    ``dnrt_core.tuning.detect_family`` recognises transformers by a module whose class
    name contains ``Attention``; timm's ``TalkingHeadAttn``/``ClassAttn`` do not, and
    CaiT would be treated as a CNN (one ARR site, no DPA site).
    """


class ClassAttention(timm_cait.ClassAttn):
    """timm CaiT's class attention (see :class:`TalkingHeadAttention`)."""


def build_pvt_tiny(num_classes, img_size, drop_path, act_layer, in_chans) -> nn.Module:
    """timm ``pvt_v2_b0`` (resolution-free; sr ratios 1 below 224 px)."""
    _check_patch(img_size, 32, "pvt_tiny")
    kwargs: dict = {}
    if img_size < NATIVE_SIZE:
        kwargs["sr_ratios"] = (1, 1, 1, 1)
    model = timm.create_model(
        "pvt_v2_b0",
        num_classes=num_classes,
        **_timm_kwargs(drop_path, None, in_chans),
        **kwargs,
    )
    return _replace_activations(model, act_layer, (nn.GELU,))  # no act_layer kwarg in timm


class _TNTBlock(timm_tnt.Block):
    """timm's TNT block taking and returning ``(patch_embed, pixel_embed)``.

    timm's block returns ``(pixel_embed, patch_embed)``; response aggregation of
    a tuple output (ARR hooks) reads its first element, which must be the
    per-image patch tokens ``(B, N+1, D)``, not the per-patch pixels ``(B*N, P, d)``.
    """

    def forward(self, patch_embed, pixel_embed):  # type: ignore[override]
        pixel_embed, patch_embed = super().forward(pixel_embed, patch_embed)
        return patch_embed, pixel_embed


class _PerImage(nn.Module):
    """Runs an activation on TNT's inner pixel tokens viewed per image.

    Inside TNT's inner (pixel) MLP the batch axis is ``B * num_patches``; class-aware
    mechanisms (DPA) need the sample axis, so the ``(B*N, P, d)`` tensor is viewed as
    ``(B, N*P, d)`` around the activation (element-wise and per-vector activations are
    unaffected by the view).
    """

    def __init__(self, act: nn.Module, num_patches: int):
        super().__init__()
        self.act = act
        self.num_patches = num_patches

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bn, p, d = x.shape
        y = self.act(x.reshape(bn // self.num_patches, self.num_patches * p, d))
        return y.reshape(bn, p, d)


class TNTPatchFirst(timm_tnt.TNT):
    """timm TNT whose blocks pass ``(patch_embed, pixel_embed)`` (see :class:`_TNTBlock`)."""

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        pixel_embed = self.pixel_embed(x, self.pixel_pos)
        patch_embed = self.norm2_proj(
            self.proj(self.norm1_proj(pixel_embed.reshape(B, self.num_patches, -1)))
        )
        patch_embed = torch.cat((self.cls_token.expand(B, -1, -1), patch_embed), dim=1)
        patch_embed = self.pos_drop(patch_embed + self.patch_pos)
        for blk in self.blocks:
            patch_embed, pixel_embed = blk(patch_embed, pixel_embed)
        return self.norm(patch_embed)

    def forward_intermediates(self, *args, **kwargs):  # pragma: no cover - not used by dnrt
        raise NotImplementedError("forward_intermediates is not supported by TNTPatchFirst")


def build_tnt_s(num_classes, img_size, drop_path, act_layer, in_chans) -> nn.Module:
    """timm ``tnt_s_patch16_224``; below 224 px patch 4 with a stride-1 pixel embedding."""
    if img_size >= NATIVE_SIZE:
        patch, first_stride = 16, 4
    else:
        patch, first_stride = 4, 1
    _check_patch(img_size, patch, "tnt_s")
    model = timm.create_model(
        "tnt_s_patch16_224",
        num_classes=num_classes,
        img_size=img_size,
        patch_size=patch,
        first_stride=first_stride,
        **_timm_kwargs(drop_path, None, in_chans),
    )
    _replace_activations(model, act_layer, (nn.GELU,))  # no act_layer kwarg in timm
    model.__class__ = TNTPatchFirst
    for blk in model.blocks:
        blk.__class__ = _TNTBlock
        blk.mlp_in.act = _PerImage(blk.mlp_in.act, model.num_patches)
    return model


# --------------------------------------------------------------------------- CNNs


def build_resnet18(num_classes, img_size, drop_path, act_layer, in_chans) -> nn.Module:
    """timm ResNet-18 (BasicBlock [2, 2, 2, 2]); CIFAR stem below 224 px."""
    kwargs: dict = {"pretrained": False, "num_classes": num_classes, "in_chans": in_chans}
    if act_layer is not None:
        kwargs["act_layer"] = act_layer
    model = timm.create_model("resnet18", **kwargs)
    if img_size < NATIVE_SIZE:
        model.conv1 = nn.Conv2d(in_chans, 64, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
        model.maxpool = nn.Identity()
        for info, reduction in zip(model.feature_info, (1, 1, 2, 4, 8), strict=True):
            info["reduction"] = reduction
    return model


class AlexNet(nn.Module):
    """torchvision's AlexNet layout with stages ``features.{0,1,2}`` (each ends at a max-pool).

    Below 224 px it is the common 5-conv CIFAR AlexNet: 3x3 convs (the first at
    stride 2), three 2x2 max-pools, so a 32 px image ends at 256x2x2; the
    classifier keeps AlexNet's two 4096-wide hidden layers.
    """

    def __init__(self, num_classes: int = 10, img_size: int = 32, in_chans: int = 3,
                 act_layer: ActLayer = None, dropout: float = 0.5):  # fmt: skip
        super().__init__()
        act = act_layer or nn.ReLU
        self.num_classes = num_classes
        if img_size >= NATIVE_SIZE:  # torchvision.models.alexnet
            c1 = nn.Conv2d(in_chans, 64, kernel_size=11, stride=4, padding=2)
            c2 = nn.Conv2d(64, 192, kernel_size=5, padding=2)
            pool, pooled = nn.MaxPool2d(kernel_size=3, stride=2), 6
        else:
            c1 = nn.Conv2d(in_chans, 64, kernel_size=3, stride=2, padding=1)
            c2 = nn.Conv2d(64, 192, kernel_size=3, padding=1)
            pool, pooled = nn.MaxPool2d(kernel_size=2), 2
        self.features = nn.Sequential(
            nn.Sequential(c1, act(), pool),
            nn.Sequential(c2, act(), type(pool)(pool.kernel_size, pool.stride)),
            nn.Sequential(
                nn.Conv2d(192, 384, kernel_size=3, padding=1), act(),
                nn.Conv2d(384, 256, kernel_size=3, padding=1), act(),
                nn.Conv2d(256, 256, kernel_size=3, padding=1), act(),
                type(pool)(pool.kernel_size, pool.stride),
            ),
        )  # fmt: skip
        self.avgpool = nn.AdaptiveAvgPool2d((pooled, pooled))
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(256 * pooled * pooled, 4096), act(),
            nn.Dropout(dropout), nn.Linear(4096, 4096), act(),
            nn.Linear(4096, num_classes),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def build_alexnet(num_classes, img_size, drop_path, act_layer, in_chans) -> nn.Module:
    return AlexNet(num_classes, img_size=img_size, in_chans=in_chans, act_layer=act_layer)


class VGG(nn.Module):
    """``features`` (stages, each ending at a max-pool) -> pool -> ``classifier``."""

    def __init__(self, features: nn.Sequential, classifier: nn.Module, pool: nn.Module,
                 num_classes: int):  # fmt: skip
        super().__init__()
        self.num_classes = num_classes
        self.features = features
        self.avgpool = pool
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def build_vgg11(num_classes, img_size, drop_path, act_layer, in_chans) -> nn.Module:
    """torchvision ``vgg11_bn``; below 224 px its features + a linear 512 -> K classifier."""
    tv = torchvision.models.vgg11_bn(weights=None, num_classes=num_classes)
    if in_chans != 3:
        tv.features[0] = _conv_like(tv.features[0], in_chans=in_chans)
    features = _split_at_pools(tv.features)
    if img_size >= NATIVE_SIZE:
        model = VGG(features, tv.classifier, tv.avgpool, num_classes)
    else:
        model = VGG(features, nn.Linear(512, num_classes), nn.AdaptiveAvgPool2d(1), num_classes)
    return _replace_activations(model, act_layer, (nn.ReLU,))


def build_mobilenet(num_classes, img_size, drop_path, act_layer, in_chans) -> nn.Module:
    """torchvision ``mobilenet_v2``; below 224 px the first conv and block 2 at stride 1."""
    model = torchvision.models.mobilenet_v2(weights=None, num_classes=num_classes)
    small = img_size < NATIVE_SIZE
    if small or in_chans != 3:
        first = model.features[0][0]
        model.features[0][0] = _conv_like(first, in_chans=in_chans, stride=1 if small else None)
    if small:
        model.features[2].conv[1][0].stride = (1, 1)  # depthwise conv of the first 24-ch block
    model.num_classes = num_classes
    return _replace_activations(model, act_layer, (nn.ReLU, nn.ReLU6))


def build_shufflenet(num_classes, img_size, drop_path, act_layer, in_chans) -> nn.Module:
    """torchvision ``shufflenet_v2_x1_0``; below 224 px conv1 at stride 1 and no max-pool."""
    model = torchvision.models.shufflenet_v2_x1_0(weights=None, num_classes=num_classes)
    small = img_size < NATIVE_SIZE
    if small or in_chans != 3:
        model.conv1[0] = _conv_like(model.conv1[0], in_chans=in_chans, stride=1 if small else None)
    if small:
        model.maxpool = nn.Identity()
    model.num_classes = num_classes
    return _replace_activations(model, act_layer, (nn.ReLU,))


# --------------------------------------------------------------------------- registry


IMAGE_MODELS: dict[str, ImageModelSpec] = {
    "vit_tiny": ImageModelSpec(
        _vit_like("vit_tiny_patch16_224", "vit_tiny"), "transformer",
        "ViT-Tiny (timm vit_tiny_patch16_224; patch 4 below 224 px)",
    ),
    "deit_tiny": ImageModelSpec(
        _vit_like("deit_tiny_patch16_224", "deit_tiny"), "transformer",
        "DeiT-Tiny (timm deit_tiny_patch16_224; patch 4 below 224 px)",
    ),
    "cait_xxs": ImageModelSpec(
        _vit_like("cait_xxs24_224", "cait_xxs", attn_block=TalkingHeadAttention,
                  attn_block_token_only=ClassAttention), "transformer",
        "CaiT-XXS24 (timm cait_xxs24_224; patch 4 below 224 px)",
    ),
    "pvt_tiny": ImageModelSpec(
        build_pvt_tiny, "transformer", "PVT-v2-b0 (timm pvt_v2_b0; sr ratios 1 below 224 px)", 32
    ),
    "tnt_s": ImageModelSpec(
        build_tnt_s, "transformer",
        "TNT-S (timm tnt_s_patch16_224; patch 4, pixel stride 1 below 224 px)",
    ),
    "resnet18": ImageModelSpec(build_resnet18, "cnn", "ResNet-18 (timm; CIFAR stem below 224 px)"),
    "alexnet": ImageModelSpec(build_alexnet, "cnn", "AlexNet (5-conv CIFAR variant below 224 px)"),
    "vgg11": ImageModelSpec(
        build_vgg11, "cnn", "VGG-11-BN (torchvision; linear head below 224 px)", 32
    ),
    "mobilenet": ImageModelSpec(
        build_mobilenet, "cnn", "MobileNetV2 (torchvision; CIFAR strides below 224 px)"
    ),
    "shufflenet": ImageModelSpec(
        build_shufflenet, "cnn", "ShuffleNetV2 1.0x (torchvision; CIFAR stem below 224 px)"
    ),
}  # fmt: skip


def available_models() -> list[str]:
    return sorted(IMAGE_MODELS)


def create_image_model(
    name: str,
    num_classes: int,
    img_size: int = 32,
    drop_path: float = 0.1,
    act_layer: type[nn.Module] | None = None,
    in_chans: int = 3,
) -> nn.Module:
    """Build the image model ``name`` (see :data:`IMAGE_MODELS`), never pretrained.

    Args:
        name: registry name (``vit_tiny``, ``resnet18``, ...; ``-`` and case are ignored).
        num_classes: number of output classes K (the model's ``num_classes`` attribute).
        img_size: input size; below 224 px the small-image (CIFAR) configuration is used.
        drop_path: stochastic depth rate of the transformers (CNNs ignore it).
        act_layer: activation class to use instead of the model's own (one instance per site).
        in_chans: input channels.
    """
    key = str(name).lower().replace("-", "_")
    if key not in IMAGE_MODELS:
        raise unknown_name_error("model", name, available_models())
    if not isinstance(num_classes, int) or num_classes <= 0:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    spec = IMAGE_MODELS[key]
    if img_size < spec.min_size:
        raise ValueError(f"{key} needs img_size >= {spec.min_size}, got {img_size}")
    if in_chans <= 0:
        raise ValueError(f"in_chans must be positive, got {in_chans}")
    if not 0.0 <= drop_path < 1.0:
        raise ValueError(f"drop_path must be in [0, 1), got {drop_path}")
    model = spec.build(num_classes, int(img_size), float(drop_path), act_layer,
                                    int(in_chans))  # fmt: skip
    if getattr(model, "num_classes", None) != num_classes:
        model.num_classes = num_classes
    return model
