"""``tune(model, act=..., arr=..., dpa=...)``: DNRT / DPA for any ``nn.Module``.

Activation modules are swapped in place; ARR is attached to named sites by
forward hooks and DPA modules replace the activations at their sites, so no
model code is forked. Sites are glob patterns over module names where ``*``
matches one dotted segment and ``**`` any number of them (``blocks.*`` is every
direct child of ``blocks``).

    >>> vit = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=4, num_classes=10)
    >>> model = tune(vit, act="raa", arr=True)          # the paper's DNRT ViT
    >>> out = model(images, targets=labels)
    >>> loss = F.cross_entropy(out, labels) + model.aux_loss()
"""

from __future__ import annotations

import copy
import fnmatch
import warnings
from dataclasses import dataclass, field, fields

import torch
from torch import nn

from .activations import get_activation
from .arr import ARR
from .dpa import DPA, TAU
from .gdn import GDN
from .pooling import POOLS, aggregate, class_indices
from .raa import RAA

FAMILIES = ("vit", "cnn", "gnn", "generic")

_ACTIVATION_TYPES: tuple[type, ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.ELU, nn.SELU, nn.CELU,
    nn.Softplus, nn.Mish, nn.Hardswish, RAA, GDN, TAU, DPA,
)  # fmt: skip
# gates (sigmoid, hard-sigmoid, tanh) are not activations we swap
_TIMM_ACT_NAMES = {"GELU", "GELUTanh", "QuickGELU", "Swish", "Mish", "HardSwish", "HardMish",
                   "PReLU", "ReLU", "ReLU6", "SiLU"}  # fmt: skip


def is_activation(module: nn.Module) -> bool:
    """True for the (non-gating) activation modules that ``tune`` replaces."""
    if isinstance(module, _ACTIVATION_TYPES):
        return True
    cls = type(module)
    return cls.__module__.startswith("timm.layers.activations") and cls.__name__ in _TIMM_ACT_NAMES


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


@dataclass
class ARRSpec:
    """Where and how ARR acts. ``sites=None`` uses the model family's default placement."""

    sites: str | list[str] | None = None
    pool: str | None = None
    lam: float = 10.0
    momentum: float = 0.1
    target: str = "after"


@dataclass
class DPASpec:
    """Where and how DPA acts. ``sites`` select activation modules to become DPA."""

    sites: str | list[str] | None = None
    pool: str | None = None
    lam: float = 1.0
    momentum: float = 0.9
    interval: int = 5
    tau: float = 0.0


def _as_spec(value, spec_cls):
    if value is None or value is False:
        return None
    if value is True:
        return spec_cls()
    if isinstance(value, spec_cls):
        return value
    if isinstance(value, dict):
        valid = {f.name for f in fields(spec_cls)}
        unknown = set(value) - valid
        if unknown:
            raise ValueError(
                f"unknown {spec_cls.__name__} keys {sorted(unknown)}; valid: {sorted(valid)}"
            )
        return spec_cls(**{k: v for k, v in value.items() if v is not None})
    raise TypeError(f"expected True, a dict or {spec_cls.__name__}, got {type(value).__name__}")


# --------------------------------------------------------------------------- families


def detect_family(model: nn.Module) -> str:
    """``vit`` | ``cnn`` | ``gnn`` | ``generic``, from the model's structure."""
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


def _vit_pool(model: nn.Module) -> str:
    if getattr(model, "num_prefix_tokens", 0) > 0:
        return "token"
    if hasattr(model, "cls_token") and not hasattr(model, "blocks_token_only"):
        return "token"
    return "mean"


def _cnn_feature_site(model: nn.Module) -> str:
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
    if family == "vit":
        if isinstance(getattr(model, "blocks", None), (nn.ModuleList, nn.Sequential)):
            return ["blocks.*"], _vit_pool(model)
        return ["stages.*.blocks.*"], "mean"
    if family == "cnn":
        return [_cnn_feature_site(model)], "avg"
    if family == "gnn":
        n = len(model.convs)
        return [f"convs.{i}" for i in range(max(n - 1, 1))], "node"
    raise ValueError("cannot infer ARR sites for this model; pass arr={'sites': ..., 'pool': ...}")


def default_dpa_sites(model: nn.Module, family: str) -> tuple[list[str], str]:
    """The DPA paper's placement: every ViT block, the last CNN block, every GNN layer."""
    if family == "vit":
        if isinstance(getattr(model, "blocks", None), (nn.ModuleList, nn.Sequential)):
            return ["blocks.**"], _vit_pool(model)
        return ["stages.*.blocks.**"], "mean"
    if family == "cnn":
        stage = _cnn_feature_site(model)
        module = model.get_submodule(stage)
        # the last child that holds an activation (flat stages end with pooling layers)
        children = [n for n, c in module.named_children() if any(map(is_activation, c.modules()))]
        last = f"{stage}.{children[-1]}" if children else stage
        return [last, f"{last}.**"], "avg"
    if family == "gnn":
        return ["**"], "node"
    return ["**"], "auto"


def infer_num_classes(model: nn.Module) -> int | None:
    for attr in ("num_classes", "out_channels"):
        value = getattr(model, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    last = None
    for m in model.modules():
        if isinstance(m, nn.Linear):
            last = m
    return last.out_features if last is not None else None


# --------------------------------------------------------------------------- per-call sites


class PerCallActivation(nn.Module):
    """Gives each call of a reused activation module its own instance.

    Some models call one activation module several times per forward
    (torchvision's BasicBlock reuses ``self.relu``; PyG's BasicGNN ``self.act``).
    A parametric or class-aware mechanism needs one instance per call site: the
    k-th call within a forward uses ``calls[k]``.
    """

    def __init__(self, instances: list[nn.Module]):
        super().__init__()
        self.calls = nn.ModuleList(instances)
        self.position = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        module = self.calls[self.position % len(self.calls)]
        self.position += 1
        return module(x)


class _CallProbe(nn.Module):
    """Stands in for a module during the first forward and counts its calls; call k > 0
    runs on a fresh copy of the module as it was before that forward."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.template = [copy.deepcopy(module)]  # a list: not registered as a submodule
        self.instances = [module]
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.calls
        self.calls += 1
        if k == len(self.instances):
            clone = copy.deepcopy(self.template[0])
            if isinstance(clone, DPA):
                clone.set_targets(self.instances[0].targets)
            self.instances.append(clone)
        return self.instances[k](x)


# --------------------------------------------------------------------------- Tuned


@dataclass
class TuneReport:
    family: str
    act: str | None
    replaced: list[str] = field(default_factory=list)
    arr_sites: list[str] = field(default_factory=list)
    dpa_sites: list[str] = field(default_factory=list)
    per_call: dict[str, int] = field(default_factory=dict)

    def __str__(self) -> str:
        lines = [f"family={self.family} act={self.act} replaced {len(self.replaced)} activations"]
        if self.arr_sites:
            lines.append(f"ARR at {len(self.arr_sites)} sites: {', '.join(self.arr_sites)}")
        if self.dpa_sites:
            lines.append(f"DPA at {len(self.dpa_sites)} sites")
        for name, n in self.per_call.items():
            lines.append(f"{name} is called {n}x per forward: gave each call its own instance")
        return "\n".join(lines)


class Tuned(nn.Module):
    """A model with DNRT/DPA attached.

    ``tuned(x, targets=y)`` returns the wrapped model's output; while training
    with targets, ARR/DPA update their memories and :meth:`aux_loss` returns the
    lambda-weighted loss of that forward (zero otherwise). ``targets`` are class
    labels ``(B,)`` (negative = ignored, e.g. unlabelled nodes) or soft targets ``(B, K)``.
    """

    def __init__(self, model: nn.Module, report: TuneReport, arr_spec: ARRSpec | None,
                 dpa_spec: DPASpec | None):  # fmt: skip
        super().__init__()
        self.model = model
        self.report = report
        self.arr_spec = arr_spec
        self.dpa_spec = dpa_spec
        self.arr = nn.ModuleDict()
        self._arr_sites: dict[str, str] = {}
        self._targets: torch.Tensor | None = None
        self._arr_losses: list[torch.Tensor] = []
        self._checked_reuse = False
        self._register_load_state_dict_pre_hook(self._split_for_load)

    # -- construction helpers used by tune()
    def _attach_arr(self, site: str, module: nn.Module, num_classes: int, spec: ARRSpec,
                    pool: str) -> None:  # fmt: skip
        key = site.replace(".", "_") or "root"
        self.arr[key] = ARR(num_classes, momentum=spec.momentum, target=spec.target)
        self._arr_sites[key] = site

        def hook(_module, _inputs, output, key=key, pool=pool):
            if self.training and self._targets is not None:
                response = aggregate(output, pool)
                self._arr_losses.append(self.arr[key](response, self._targets))

        module.register_forward_hook(hook)

    def dpa_modules(self) -> list[DPA]:
        return [m for m in self.model.modules() if isinstance(m, DPA)]

    # -- forward
    def forward(self, *args, targets: torch.Tensor | None = None, **kwargs):
        self._arr_losses = []
        y = class_indices(targets) if targets is not None else None
        self._targets = y
        for m in self.dpa_modules():
            m.set_targets(y)
        try:
            if not self._checked_reuse:
                return self._first_forward(*args, **kwargs)
            for m in self.model.modules():
                if isinstance(m, PerCallActivation):
                    m.position = 0
            return self.model(*args, **kwargs)
        finally:
            self._targets = None
            for m in self.dpa_modules():  # again: the first forward may have split some
                m.set_targets(None)

    def _stateful_sites(self) -> dict[str, nn.Module]:
        """Replaced modules that hold parameters or memories (RAA, GDN, DPA), by name."""
        replaced = set(self.report.replaced)
        return {
            name: m
            for name, m in self.model.named_modules()
            if isinstance(m, (RAA, GDN, DPA)) and name in replaced
        }

    def _set_site(self, name: str, module: nn.Module) -> None:
        parent_name, _, attr = name.rpartition(".")
        parent = self.model.get_submodule(parent_name) if parent_name else self.model
        setattr(parent, attr, module)

    def _first_forward(self, *args, **kwargs):
        """Run one forward with every stateful mechanism behind a :class:`_CallProbe`.

        A module called k times gets k instances: the k-th call runs on a fresh copy of
        the module as ``tune`` built it (so a lazy module sizes itself to that call's
        input, even when the calls differ in width, as in torchvision's Bottleneck).
        """
        probes = {name: _CallProbe(m) for name, m in self._stateful_sites().items()}
        for name, probe in probes.items():
            self._set_site(name, probe)
        ok = False
        try:
            out = self.model(*args, **kwargs)
            ok = True
        finally:
            for name, probe in probes.items():
                n = len(probe.instances) if ok else 1
                if n == 1:
                    self._set_site(name, probe.instances[0])
                    continue
                self._set_site(name, PerCallActivation(probe.instances))
                self.report.per_call[name] = n
                warnings.warn(
                    f"dnrt.tune: {name} is called {n}x per forward; gave each call its own "
                    f"{type(probe.instances[0]).__name__} instance ({name}.calls.0-{n - 1})",
                    stacklevel=4,
                )
        self._checked_reuse = True
        return out

    def _split_for_load(self, state_dict, prefix, *args, **kwargs) -> None:
        """Load-time counterpart of the first forward: a checkpoint whose keys show a split
        site (``<site>.calls.<k>.``) splits the same site here before loading."""
        sites = self._stateful_sites()
        for name, module in sites.items():
            head = f"{prefix}model.{name}.calls."
            calls = {
                int(key[len(head) :].split(".", 1)[0])
                for key in state_dict
                if key.startswith(head) and key[len(head) :].split(".", 1)[0].isdigit()
            }
            if calls:
                n = max(calls) + 1
                instances = [module] + [copy.deepcopy(module) for _ in range(n - 1)]
                self._set_site(name, PerCallActivation(instances))
                self.report.per_call[name] = n

    @torch.no_grad()
    def materialize(self, *args, **kwargs) -> Tuned:
        """Run one eval forward on example inputs: sizes lazy parameters and splits reused
        activation modules. Call it before building the optimiser or loading a state_dict."""
        was_training = self.training
        self.eval()
        try:
            self(*args, **kwargs)
        finally:
            self.train(was_training)
        return self

    def aux_loss(self) -> torch.Tensor:
        """lambda_arr · mean_j L_arr^j + lambda_dpa · mean_j L_dpa^j of the last forward."""
        total = None
        if self._arr_losses and self.arr_spec is not None:
            total = self.arr_spec.lam * torch.stack(self._arr_losses).mean()
        dpa_losses = [m.last_loss for m in self.dpa_modules() if m.last_loss is not None]
        if dpa_losses and self.dpa_spec is not None:
            term = self.dpa_spec.lam * torch.stack(dpa_losses).mean()
            total = term if total is None else total + term
        if total is None:
            ref = next(iter(self.parameters()), None)
            return torch.zeros((), device=ref.device if ref is not None else None)
        return total

    def memory_state(self) -> dict[str, torch.Tensor]:
        """All ARR/DPA memories (for checks, e.g. that DDP ranks agree)."""
        return {k: v for k, v in self.state_dict().items() if _is_memory_key(k)}


def _is_memory_key(key: str) -> bool:
    return key.startswith("arr.") or key.rsplit(".", 1)[-1] in {
        "forward_memory", "backward_memory", "forward_initialized", "backward_initialized",
    }  # fmt: skip


# --------------------------------------------------------------------------- presets


#: compound mechanism names accepted wherever an activation name is
MECHANISM_ALIASES = {
    "dnrt": ("raa", True, False),  # RAA + ARR, the paper's DNRT
}


def resolve_mechanism(name: str) -> tuple[str, bool, bool]:
    """``name`` -> (activation, arr, dpa). ``dnrt`` = raa+ARR, ``dpa`` = TAU with DPA memories,
    ``X+arr`` = activation X with ARR."""
    key = name.lower().strip()
    if key in MECHANISM_ALIASES:
        return MECHANISM_ALIASES[key]
    if key == "dpa":
        return "tau", False, True
    if key.endswith("+arr"):
        act, _, dpa = resolve_mechanism(key[: -len("+arr")])
        return act, True, dpa
    get_activation(key, num_classes=1)  # validates the name
    return key, False, False


# --------------------------------------------------------------------------- tune


def tune(
    model: nn.Module,
    *,
    act: str | None = None,
    arr: bool | dict | ARRSpec | None = None,
    dpa: bool | dict | DPASpec | None = None,
    num_classes: int | None = None,
    act_sites: str | list[str] | None = None,
    family: str | None = None,
    example_inputs: tuple | torch.Tensor | None = None,
) -> Tuned:
    """Swap activations for ``act`` and attach ARR / DPA; returns a :class:`Tuned` wrapper.

    Args:
        model: any ``nn.Module`` (modified in place and wrapped).
        act: registry name (``raa``, ``gelu``, ``tau``, ...) or ``dpa`` (TAU + DPA memories);
            ``None`` keeps the model's activations.
        arr: ``True`` (paper placement), a dict / :class:`ARRSpec` with ``sites``, ``pool``,
            ``lam``, ``momentum``, ``target``; ``None``/``False`` for no ARR.
        dpa: ``True`` or a dict / :class:`DPASpec`; DPA modules replace the activations at
            its sites.
        num_classes: K for the class memories (inferred from the model when possible).
        act_sites: glob(s) restricting which activations are swapped (default: all).
        family: override family detection (``vit``, ``cnn``, ``gnn``, ``generic``).
        example_inputs: if given, runs :meth:`Tuned.materialize` on them.
    """
    if act is not None and act.lower() == "dpa":
        act = "tau"
        dpa = True if dpa is None else dpa
    arr_spec = _as_spec(arr, ARRSpec)
    dpa_spec = _as_spec(dpa, DPASpec)
    family = family or detect_family(model)
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; valid: {', '.join(FAMILIES)}")
    if (arr_spec or dpa_spec) and num_classes is None:
        num_classes = infer_num_classes(model)
        if num_classes is None:
            raise ValueError("num_classes is needed for ARR/DPA and could not be inferred")
    if act is not None:
        get_activation(act, num_classes=num_classes or 1)  # validate early

    report = TuneReport(family=family, act=act)
    dpa_patterns: list[str] = []
    dpa_pool = "auto"
    if dpa_spec is not None:
        dpa_patterns, dpa_pool = default_dpa_sites(model, family)
        if dpa_spec.sites is not None:
            dpa_patterns = (
                [dpa_spec.sites] if isinstance(dpa_spec.sites, str) else list(dpa_spec.sites)
            )
        dpa_pool = dpa_spec.pool or dpa_pool
        _check_pool(dpa_pool)

    # activations, each name gets its own instance (shared objects are split too)
    act_names = [
        n for n, m in model.named_modules(remove_duplicate=False) if n and is_activation(m)
    ]
    for name in act_names:
        if act_sites is not None and not match_any(name, act_sites):
            continue
        at_dpa_site = dpa_spec is not None and match_any(name, dpa_patterns)
        if at_dpa_site:
            new = DPA(num_classes, tau=dpa_spec.tau, momentum=dpa_spec.momentum,
                      interval=dpa_spec.interval, pool=dpa_pool)  # fmt: skip
            report.dpa_sites.append(name)
        elif act is not None:
            new = get_activation(act, num_classes=num_classes, dim=None)
        else:
            continue
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, new)
        report.replaced.append(name)
    if dpa_spec is not None and not report.dpa_sites:
        raise ValueError(f"DPA sites {dpa_patterns} match no activation module")

    tuned = Tuned(model, report, arr_spec, dpa_spec)
    if arr_spec is not None:
        patterns, pool = (
            default_arr_sites(model, family)
            if arr_spec.sites is None
            else (
                [arr_spec.sites] if isinstance(arr_spec.sites, str) else list(arr_spec.sites),
                "auto",
            )
        )
        pool = arr_spec.pool or pool
        _check_pool(pool)
        names = [n for n, _ in model.named_modules() if n and match_any(n, patterns)]
        if not names:
            raise ValueError(f"ARR sites {patterns} match no module of this model")
        for name in names:
            tuned._attach_arr(name, model.get_submodule(name), num_classes, arr_spec, pool)
            report.arr_sites.append(name)
    if example_inputs is not None:
        inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
        tuned.materialize(*inputs)
    return tuned


def _check_pool(pool: str) -> None:
    if pool not in POOLS:
        raise ValueError(f"unknown pool {pool!r}; valid: {', '.join(POOLS)}")
