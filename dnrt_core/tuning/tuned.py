"""The :class:`Tuned` wrapper that :func:`dnrt_core.tune` returns, and the per-call split of
activation modules that a model calls more than once per forward."""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from ..mechanisms import ARR, DPA, GDN, RAA
from ..mechanisms.dpa import channel_loss
from ..mechanisms.pooling import aggregate, class_indices
from .sites import ARR_PLACEMENT_NOTES, UNRELEASED_FAMILIES
from .specs import ARRSpec, DPASpec


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


class CallProbe(nn.Module):
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


@dataclass
class TuneReport:
    family: str
    act: str | None
    replaced: list[str] = field(default_factory=list)
    arr_sites: list[str] = field(default_factory=list)
    arr_placement: str | None = None
    arr_lambda: float | None = None
    dpa_sites: list[str] = field(default_factory=list)
    per_call: dict[str, int] = field(default_factory=dict)

    def __str__(self) -> str:
        lines = [f"family={self.family} act={self.act} replaced {len(self.replaced)} activations"]
        if self.arr_sites:
            lines.append(f"ARR at {len(self.arr_sites)} sites: {', '.join(self.arr_sites)}"
                         + (" (:in = the module's input)" if any(":" in s for s in self.arr_sites)
                            else ""))  # fmt: skip
            note = ARR_PLACEMENT_NOTES.get(self.arr_placement or "")
            if note:
                lines.append(
                    f"ARR placement {self.arr_placement}: {note}; lambda {self.arr_lambda:g}"
                )
            if self.family in UNRELEASED_FAMILIES:
                lines.append(
                    f"  (no released {self.family.upper()} code: this placement is dnrt's reading "
                    "of the paper; see docs/results.md, 'Why ARR collapses on CNNs/GNNs')"
                )
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
        #: the pooled response (B, d) of each ARR site in the last training forward
        self._arr_responses: dict[str, torch.Tensor] = {}
        self._arr_calls: dict[str, int] = {}
        self._in_forward = False
        self._checked_reuse = False
        self._register_load_state_dict_pre_hook(self._split_for_load)

    # -- construction helpers used by tune()
    def _attach_arr(self, site: str, module: nn.Module, num_classes: int, spec: ARRSpec,
                    pool: str, on_input: bool = False) -> None:  # fmt: skip
        """ARR on ``module``'s output (or, ``on_input``, its first input: a pre-activation)."""
        key = site.replace(".", "_").replace(":", "_") or "root"
        self.arr[key] = ARR(num_classes, momentum=spec.momentum, target=spec.target)
        self._arr_sites[key] = site

        def record(x, key=key, pool=pool, site=site):
            if not self._in_forward:  # a submodule called on its own, outside this wrapper
                return
            self._arr_calls[key] = self._arr_calls.get(key, 0) + 1
            if self._arr_calls[key] > 1:
                raise ValueError(
                    f"ARR site {site} runs more than once per forward (a reused module, e.g. "
                    "torchvision's BasicBlock.relu); give ARR sites that run once"
                )
            if self.training and self._targets is not None:
                try:
                    response = aggregate(x, pool)
                except (ValueError, TypeError) as exc:  # e.g. an output without a tensor
                    raise ValueError(f"ARR site {site!r}: {exc}") from None
                self._arr_responses[key] = response
                self._arr_losses.append(self.arr[key](response, self._targets))

        if on_input:
            module.register_forward_pre_hook(lambda _m, inputs: record(inputs[0]))
        else:
            module.register_forward_hook(lambda _m, _inputs, output: record(output))

    def dpa_modules(self) -> list[DPA]:
        return [m for m in self.model.modules() if isinstance(m, DPA)]

    @property
    def counts_eval_targets(self) -> bool:
        """True when labelled eval forwards matter (a DPA with ``count_eval``): evaluation
        then passes the labels, as the released code does, so the update counter keeps the
        released phase across epochs."""
        return any(m.count_eval for m in self.dpa_modules())

    # -- forward
    def forward(self, *args, **kwargs):
        # ``targets`` is read from kwargs, not declared: the TorchScript ONNX exporter fills
        # every declared parameter with a default into the positional inputs of the model
        targets: torch.Tensor | None = kwargs.pop("targets", None)
        self._arr_losses = []
        self._arr_responses = {}
        self._arr_calls = {}
        y = class_indices(targets) if targets is not None else None
        self._targets = y
        for m in self.dpa_modules():
            m.set_targets(y)
            m.last_selected = None
        self._in_forward = True
        try:
            if not self._checked_reuse:
                return self._first_forward(*args, **kwargs)
            for m in self.model.modules():
                if isinstance(m, PerCallActivation):
                    m.position = 0
            return self.model(*args, **kwargs)
        finally:
            self._in_forward = False
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
        """Run one forward with every stateful mechanism behind a :class:`CallProbe`.

        A module called k times gets k instances: the k-th call runs on a fresh copy of
        the module as ``tune`` built it (so a lazy module sizes itself to that call's
        input, even when the calls differ in width, as in torchvision's Bottleneck).
        """
        probes = {name: CallProbe(m) for name, m in self._stateful_sites().items()}
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
        """arr_lambda · mean_j L_arr^j + dpa_lambda · L_dpa of the last forward, where L_dpa
        is one mean of squares over the irrelevant values of all DPA sites together, as
        released (:func:`dnrt_core.mechanisms.dpa.channel_loss`)."""
        total = None
        if self._arr_losses and self.arr_spec is not None:
            total = self.arr_spec.arr_lambda * torch.stack(self._arr_losses).mean()
        dpa_loss = channel_loss(m.last_selected for m in self.dpa_modules())
        if dpa_loss is not None and self.dpa_spec is not None:
            term = self.dpa_spec.dpa_lambda * dpa_loss
            total = term if total is None else total + term
        if total is None:
            ref = next(iter(self.parameters()), None)
            return torch.zeros((), device=ref.device if ref is not None else None)
        return total

    def memory_state(self) -> dict[str, torch.Tensor]:
        """All ARR/DPA memories (for checks, e.g. that DDP ranks agree)."""
        return {k: v for k, v in self.state_dict().items() if _is_memory_key(k)}


def _is_memory_key(key: str) -> bool:
    return key.startswith("arr.") or key.rsplit(".", 1)[-1] in {"forward_memory", "backward_memory"}
