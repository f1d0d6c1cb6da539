"""Hugging Face ``transformers`` models, recognised by duck typing (``transformers`` is never
imported here, so dnrt works without it).

* activations: the classes of ``transformers.activations`` (what ``ACT2FN`` builds:
  ``GELUActivation``, ``NewGELUActivation``, ``FastGELUActivation``, ``QuickGELUActivation``,
  ...); gates (sigmoid, tanh) and the identity are not swapped;
* families: an image transformer (ViT, DeiT, Swin, ...; ``config.num_channels``) is ``vit``;
  a bidirectional text encoder (BERT, RoBERTa, ...; ``config.vocab_size``, no causal
  attention) is ``text``;
* sites: every layer of the model's layer stacks (``vit.layers.*``, ``bert.encoder.layer.*``,
  ``swin.encoder.layers.*.blocks.*``), found from the module tree, not from names, so it
  holds across ``transformers`` versions. The aggregated response of a layer is its class
  token (ViT/DeiT, and the CLS token of BERT/RoBERTa) or the mean over tokens (Swin and
  models without a class token, or with ``config.use_mean_pooling``).
"""

from __future__ import annotations

from torch import nn

#: ``transformers`` activation classes that ``tune`` replaces (older names included)
HF_ACTIVATION_NAMES = frozenset({
    "GELUActivation", "NewGELUActivation", "FastGELUActivation", "QuickGELUActivation",
    "GELUTanh", "PytorchGELUTanh", "AccurateGELUActivation", "ClippedGELUActivation",
    "MishActivation", "SiLUActivation", "ReLUSquaredActivation", "XIELUActivation",
})  # fmt: skip


def is_hf_activation(module: nn.Module) -> bool:
    """A ``transformers`` activation module (see :data:`HF_ACTIVATION_NAMES`)."""
    cls = type(module)
    return cls.__module__.startswith("transformers.") and cls.__name__ in HF_ACTIVATION_NAMES


def is_hf_model(model: nn.Module) -> bool:
    """A ``transformers`` ``PreTrainedModel``: a ``config`` with a ``model_type`` string and a
    ``base_model_prefix``."""
    config = getattr(model, "config", None)
    return isinstance(getattr(config, "model_type", None), str) and isinstance(
        getattr(model, "base_model_prefix", None), str
    )


def _is_attention(module: nn.Module) -> bool:
    name = type(module).__name__
    return "Attention" in name or "Attn" in name


def layer_stacks(model: nn.Module) -> list[str]:
    """Names of the innermost ``ModuleList``\\ s whose items all hold an attention module
    (the transformer layers), in model order."""
    holders = {
        name
        for name, m in model.named_modules()
        if isinstance(m, nn.ModuleList)
        and len(m) > 0
        and all(any(map(_is_attention, item.modules())) for item in m)
    }
    return [
        name
        for name, _ in model.named_modules()
        if name in holders and not any(h.startswith(f"{name}.") for h in holders if h != name)
    ]


def _is_causal(model: nn.Module) -> bool:
    config = model.config
    if getattr(config, "is_decoder", False) or getattr(config, "is_encoder_decoder", False):
        return True
    return any(getattr(m, "is_causal", False) is True for m in model.modules())


def hf_family(model: nn.Module) -> str | None:
    """``vit`` (image transformer), ``text`` (bidirectional text encoder) or ``None`` (not a
    ``transformers`` model of those kinds, or no layer stack found)."""
    if not is_hf_model(model) or not layer_stacks(model):
        return None
    config = model.config
    if getattr(config, "num_channels", None) is not None:
        return "vit"
    if getattr(config, "vocab_size", None) is not None and not _is_causal(model):
        return "text"
    return None


def hf_pool(model: nn.Module, family: str) -> str:
    """``token`` (class / CLS token) or ``mean`` (over tokens) for a layer's output."""
    if family == "text":
        return "token"
    if getattr(model.config, "use_mean_pooling", False):
        return "mean"
    has_cls = any(name.rsplit(".", 1)[-1] == "cls_token" for name, _ in model.named_parameters())
    return "token" if has_cls else "mean"


def hf_sites(model: nn.Module, family: str, *, inside: bool = False) -> tuple[list[str], str]:
    """(site patterns, pool): every layer of every stack (``inside``: every module within
    them, for DPA's activation sites)."""
    suffix = ".**" if inside else ".*"
    return [f"{stack}{suffix}" for stack in layer_stacks(model)], hf_pool(model, family)
