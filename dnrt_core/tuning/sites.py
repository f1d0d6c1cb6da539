"""Where mechanisms go: activation detection, glob patterns over module names, model
families and their default ARR / DPA sites.

Sites are glob patterns over dotted module names where ``*`` matches one segment and
``**`` any number of them (``blocks.*`` is every direct child of ``blocks``).
"""

from __future__ import annotations

import fnmatch

from torch import nn

from ..mechanisms import DPA, GDN, RAA, TAU
from .hf import hf_family, hf_sites, is_hf_activation, is_hf_model, layer_stacks

FAMILIES = ("vit", "cnn", "gnn", "text", "generic")

_ACTIVATION_TYPES: tuple[type, ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.ELU, nn.SELU, nn.CELU,
    nn.Softplus, nn.Mish, nn.Hardswish, RAA, GDN, TAU, DPA,
)  # fmt: skip
# gates (sigmoid, hard-sigmoid, tanh) are not activations we swap
_TIMM_ACT_NAMES = {"GELU", "GELUTanh", "QuickGELU", "Swish", "Mish", "HardSwish", "HardMish",
                   "PReLU", "ReLU", "ReLU6", "SiLU"}  # fmt: skip


def is_activation(module: nn.Module) -> bool:
    """True for the (non-gating) activation modules that ``tune`` replaces: torch's, timm's
    and those of Hugging Face ``transformers`` (:mod:`.hf`)."""
    if isinstance(module, _ACTIVATION_TYPES):
        return True
    cls = type(module)
    if cls.__module__.startswith("timm.layers.activations") and cls.__name__ in _TIMM_ACT_NAMES:
        return True
    return is_hf_activation(module)


def match_name(name: str, pattern: str) -> bool:
    """Glob match on dotted module names: ``*`` = one segment, ``**`` = any number of segments."""

    def rec(parts: list[str], pats: list[str]) -> bool:
        if not pats:
            return not parts
        if pats[0] == "**":
            return any(rec(parts[i:], pats[1:]) for i in range(len(parts) + 1))
        return bool(parts) and fnmatch.fnmatchcase(parts[0], pats[0]) and rec(parts[1:], pats[1:])

    return rec(name.split(".") if name else [], pattern.split("."))


def match_any(name: str, patterns: str | list[str] | tuple[str, ...]) -> bool:
    if isinstance(patterns, str):
        patterns = [patterns]
    return any(match_name(name, p) for p in patterns)


def detect_family(model: nn.Module) -> str:
    """``vit`` | ``cnn`` | ``gnn`` | ``text`` | ``generic``, from the model's structure
    (``text``: a Hugging Face text encoder, see :mod:`.hf`)."""
    family = hf_family(model)
    if family is not None:
        return family
    convs = getattr(model, "convs", None)
    if isinstance(convs, nn.ModuleList) and any(
        type(m).__module__.startswith("torch_geometric") for m in convs
    ):
        return "gnn"
    has_blocks = isinstance(getattr(model, "blocks", None), (nn.ModuleList, nn.Sequential))
    has_stages_blocks = any(match_name(n, "stages.*.blocks") for n, _ in model.named_modules())
    if has_blocks or has_stages_blocks:
        names = {type(m).__name__ for m in model.modules()}
        has_mha = any(isinstance(m, nn.MultiheadAttention) for m in model.modules())
        if has_mha or any("Attention" in n or "Attn" in n for n in names):  # timm: ClassAttn
            return "vit"
    if any(isinstance(m, nn.Conv2d) for m in model.modules()):
        return "cnn"
    return "generic"


def vit_pool(model: nn.Module) -> str:
    if getattr(model, "num_prefix_tokens", 0) > 0:
        return "token"
    if hasattr(model, "cls_token") and not hasattr(model, "blocks_token_only"):
        return "token"
    return "mean"


def cnn_feature_site(model: nn.Module) -> str:
    info = getattr(model, "feature_info", None)
    if isinstance(info, list) and info and isinstance(info[-1], dict) and info[-1].get("module"):
        return info[-1]["module"]
    site = None
    for name, child in model.named_children():
        if any(isinstance(m, nn.Conv2d) for m in child.modules()):
            site = name
    if site is None:
        raise ValueError("no convolutional stage found; give ARR sites explicitly")
    return site


def default_arr_sites(model: nn.Module, family: str) -> tuple[list[str], str]:
    """The paper's ARR placement: (site patterns, pool)."""
    if family in ("vit", "text") and is_hf_model(model) and layer_stacks(model):
        return hf_sites(model, family)
    if family == "vit":
        if isinstance(getattr(model, "blocks", None), (nn.ModuleList, nn.Sequential)):
            return ["blocks.*"], vit_pool(model)
        return ["stages.*.blocks.*"], "mean"
    if family == "cnn":
        return [cnn_feature_site(model)], "avg"
    if family == "gnn":
        n = len(model.convs)
        return [f"convs.{i}" for i in range(max(n - 1, 1))], "node"
    raise ValueError("cannot infer ARR sites for this model; pass arr={'sites': ..., 'pool': ...}")


def default_dpa_sites(model: nn.Module, family: str) -> tuple[list[str], str]:
    """The DPA paper's placement: every ViT block, the last CNN block, every GNN layer."""
    if family in ("vit", "text") and is_hf_model(model) and layer_stacks(model):
        return hf_sites(model, family, inside=True)
    if family == "vit":
        if isinstance(getattr(model, "blocks", None), (nn.ModuleList, nn.Sequential)):
            return ["blocks.**"], vit_pool(model)
        return ["stages.*.blocks.**"], "mean"
    if family == "cnn":
        stage = cnn_feature_site(model)
        module = model.get_submodule(stage)
        # the last child that holds an activation (flat stages end with pooling layers)
        children = [n for n, c in module.named_children() if any(map(is_activation, c.modules()))]
        last = f"{stage}.{children[-1]}" if children else stage
        return [last, f"{last}.**"], "avg"
    if family == "gnn":
        return ["**"], "node"
    return ["**"], "auto"


def infer_num_classes(model: nn.Module) -> int | None:
    for attr in ("num_classes", "num_labels", "out_channels"):
        value = getattr(model, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    last = None
    for m in model.modules():
        if isinstance(m, nn.Linear):
            last = m
    return last.out_features if last is not None else None
