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


#: a site pattern ending in this suffix hooks the module's *input* (e.g. the pre-activation)
INPUT_SUFFIX = ":in"

#: ARR placements by family, the default first. Each is a reading of the paper's "x is the
#: globally pooled feature map" (CNNs) and L = L_task + λ·(1/J)·Σ_j L_arr^j over J sites:
#: ``last_stage`` the pooled output of the last stage (one site, the classifier's input);
#: ``every_stage`` / ``every_block`` the pooled output of every stage / residual block (the
#: ViT analogue: one site per block); ``*_pre`` the same blocks' input to their final
#: activation (before it, where the after-variants see its output). GNNs: ``every_layer`` /
#: ``last_layer`` = the hidden layers' outputs, ``*_pre`` their pre-activations.
ARR_PLACEMENTS: dict[str, tuple[str, ...]] = {
    "vit": ("every_block",),
    "cnn": ("last_stage", "every_stage", "every_block",
            "last_stage_pre", "every_stage_pre", "every_block_pre"),
    "gnn": ("every_layer", "last_layer", "every_layer_pre", "last_layer_pre"),
}  # fmt: skip

#: ARR weight λ when none is given: the paper's 10 (CIFAR-10) for ViTs; for CNNs and GNNs the
#: value chosen on validation data (docs/results.md, "ARR placement and λ, chosen on validation")
DEFAULT_ARR_LAMBDA = {"vit": 10.0, "text": 10.0, "cnn": 1.0, "gnn": 0.01, "generic": 10.0}

#: what each placement means, for :class:`~dnrt_core.tuning.tuned.TuneReport`
ARR_PLACEMENT_NOTES = {
    "every_block": "every block's output, lambda/J each (the released ViT code's placement)",
    "last_stage": "the pooled output of the last stage, the classifier's input",
    "every_stage": "the pooled output of every stage, lambda/J each",
    "last_stage_pre": "the last block's input to its final activation",
    "every_stage_pre": "each stage's last block, input to its final activation, lambda/J each",
    "every_block_pre": "every block's input to its final activation, lambda/J each",
    "every_layer": "every hidden layer's node embeddings (after the activation), lambda/J each",
    "last_layer": "the last hidden layer's node embeddings (the classifier's input)",
    "every_layer_pre": "every hidden layer's pre-activation, lambda/J each",
    "last_layer_pre": "the last hidden layer's pre-activation",
}
#: families whose placements are dnrt's reading of the paper (the authors released a ViT only)
UNRELEASED_FAMILIES = ("cnn", "gnn")


def split_site(pattern: str) -> tuple[str, bool]:
    """``"layer4.1.act2:in"`` -> ``("layer4.1.act2", True)``: the glob, and whether the
    module's input (not its output) is the response."""
    if pattern.endswith(INPUT_SUFFIX):
        return pattern[: -len(INPUT_SUFFIX)], True
    return pattern, False


def _has_conv(module: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in module.modules())


def cnn_stages(model: nn.Module) -> list[str]:
    """Names of the CNN's stages: the ``nn.Sequential`` children (or timm ``feature_info``
    modules) that hold convolutions, in forward order (``layer1`` .. ``layer4`` of a ResNet)."""
    info = getattr(model, "feature_info", None)
    names: list[str] = []
    if isinstance(info, list) and info and all(isinstance(i, dict) for i in info):
        names = [i["module"] for i in info if i.get("module")]
    else:
        names = [n for n, _ in model.named_children()]
    stages = [
        n
        for n in names
        if isinstance(model.get_submodule(n), nn.Sequential) and _has_conv(model.get_submodule(n))
    ]
    if not stages:
        raise ValueError("no convolutional stages (nn.Sequential of blocks) found; give ARR sites")
    return stages


def cnn_blocks(model: nn.Module, stage: str) -> list[str]:
    """The blocks of a stage: its children that hold a convolution (``layer4.0``, ``layer4.1``)."""
    return [f"{stage}.{n}" for n, c in model.get_submodule(stage).named_children() if _has_conv(c)]


def final_activation(model: nn.Module, block: str) -> str:
    """The block's last activation module (``layer4.1.act2``: applied after the residual add)."""
    acts = [n for n, m in model.get_submodule(block).named_modules() if n and is_activation(m)]
    if not acts:
        raise ValueError(f"{block} has no activation module; a *_pre ARR placement needs one")
    return f"{block}.{acts[-1]}"


def gnn_layers(model: nn.Module) -> tuple[list[str], bool]:
    """The hidden layers of a GNN and whether each owns its activation (``hidden.i.act``):
    dnrt's GNN (``hidden.*``) or PyG's BasicGNN (``convs.*`` but the last, a shared act)."""
    hidden = getattr(model, "hidden", None)
    if isinstance(hidden, nn.ModuleList) and len(hidden):
        own = all(is_activation(getattr(layer, "act", None) or nn.Identity()) for layer in hidden)
        return [f"hidden.{i}" for i in range(len(hidden))], own
    convs = getattr(model, "convs", None)
    if isinstance(convs, nn.ModuleList) and len(convs):
        return [f"convs.{i}" for i in range(max(len(convs) - 1, 1))], False
    raise ValueError("no GNN layers (hidden.* or convs.*) found; give ARR sites explicitly")


def arr_placement_sites(model: nn.Module, family: str, placement: str) -> tuple[list[str], str]:
    """Site names (``:in`` = the module's input) and pool of a named placement of
    :data:`ARR_PLACEMENTS`."""
    valid = ARR_PLACEMENTS.get(family, ())
    if placement not in valid:
        raise ValueError(
            f"unknown ARR placement {placement!r} for family {family!r}; "
            f"valid: {', '.join(valid) or 'none (give sites)'}"
        )
    pre = placement.endswith("_pre")
    if family == "vit":
        if isinstance(getattr(model, "blocks", None), (nn.ModuleList, nn.Sequential)):
            return ["blocks.*"], vit_pool(model)
        return ["stages.*.blocks.*"], "mean"
    if family == "gnn":
        layers, own_act = gnn_layers(model)
        if placement.startswith("last_"):
            layers = layers[-1:]
        if pre:
            if not own_act:
                raise ValueError("this GNN's layers share one activation; *_pre needs hidden.*.act")
            return [f"{name}.act{INPUT_SUFFIX}" for name in layers], "node"
        return layers, "node"
    stages = cnn_stages(model)
    if placement.startswith("last_stage"):
        stages = stages[-1:]
    if placement.startswith("every_block"):
        blocks = [b for s in stages for b in cnn_blocks(model, s)]
    else:  # a stage's output is its last block's output
        blocks = [cnn_blocks(model, s)[-1] for s in stages] if pre else stages
    if pre:
        return [f"{final_activation(model, b)}{INPUT_SUFFIX}" for b in blocks], "avg"
    return blocks, "avg"


def default_arr_sites(
    model: nn.Module, family: str, placement: str | None = None
) -> tuple[list[str], str]:
    """ARR (site patterns, pool) of ``placement`` (default: the family's first placement;
    the last stage of a CNN, every hidden layer of a GNN, every block of a ViT)."""
    if family in ("vit", "text") and is_hf_model(model) and layer_stacks(model):
        if placement not in (None, "every_block"):
            raise ValueError(f"ARR placement {placement!r} is not available for {family} models")
        return hf_sites(model, family)
    if family == "cnn" and placement in (None, "last_stage"):
        return [cnn_feature_site(model)], "avg"  # also flat CNNs without stages of blocks
    if family not in ARR_PLACEMENTS:
        raise ValueError(
            "cannot infer ARR sites for this model; pass arr={'sites': ..., 'pool': ...}"
        )
    return arr_placement_sites(model, family, placement or ARR_PLACEMENTS[family][0])


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
