"""Parameters, FLOPs and latency with and without DNRT / DPA (the paper's Table 4).

FLOPs come from :class:`torch.utils.flop_counter.FlopCounterMode` (2 FLOPs per
multiply-add; elementwise ops are not counted), extended with the matrix-vector
ops it lacks (``aten.mv``/``addmv``/``dot``: RAA's shift ``s = w·x`` is an ``mv``)
and CPU flash attention (counted with torch's own formula for the GPU attention
kernels). RAA adds exactly ``2·d`` FLOPs per feature vector; ARR and DPA add none
at inference. Paper-style counts of multiply-adds (MACs) are ``flops / 2``.

    >>> rows = profile_mechanisms(lambda: timm.create_model("vit_tiny_patch16_224", img_size=32,
    ...                           patch_size=4, num_classes=10), torch.randn(8, 3, 32, 32), 10)
    >>> print(format_profile_table(rows))
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import (
    FlopCounterMode,
    sdpa_backward_flop_count,
    sdpa_flop_count,
)

from ..mechanisms.names import check_mechanism
from ..tuning import Tuned, tune

aten = torch.ops.aten


def _mv_flop(a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    m, n = a_shape
    return 2 * m * n


def _addmv_flop(self_shape, a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    return _mv_flop(a_shape, b_shape)


def _dot_flop(a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    return 2 * a_shape[0]


def _cpu_sdpa_flop(q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(q_shape, k_shape, v_shape)


def _cpu_sdpa_backward_flop(
    grad_shape, q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs
) -> int:
    return sdpa_backward_flop_count(grad_shape, q_shape, k_shape, v_shape)


#: formulas FlopCounterMode lacks (keys are op packets, values take shapes)
EXTRA_FLOP_FORMULAS: dict = {
    aten.mv: _mv_flop,
    aten.addmv: _addmv_flop,
    aten.dot: _dot_flop,
    aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flop,
    aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward_flop,
}


def flop_counter() -> FlopCounterMode:
    """A silent ``FlopCounterMode`` that also counts matvecs and CPU flash attention."""
    return FlopCounterMode(display=False, custom_mapping=EXTRA_FLOP_FORMULAS)


def _as_tuple(inputs: torch.Tensor | tuple) -> tuple:
    return inputs if isinstance(inputs, tuple) else (inputs,)


def _output_tensor(out):
    if isinstance(out, (tuple, list)):
        out = out[0]
    if isinstance(out, dict):
        out = out.get("logits", next(iter(out.values())))
    return out


@torch.no_grad()
def count_flops(model: nn.Module, inputs: torch.Tensor | tuple) -> tuple[int, dict[str, int]]:
    """Forward FLOPs of ``model`` in eval mode: (total, per aten op)."""
    was_training = model.training
    model.eval()
    try:
        with flop_counter() as counter:
            model(*_as_tuple(inputs))
    finally:
        model.train(was_training)
    per_op = {str(k): int(v) for k, v in counter.get_flop_counts().get("Global", {}).items()}
    return int(counter.get_total_flops()), per_op


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _interleaved_median_ms(
    fns: Sequence[Callable[[], None]], repeats: int, warmup: int, device: torch.device
) -> list[float]:
    """Median ms of each ``fn``, timed round-robin so load changes hit all of them alike."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    _sync(device)
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, bucket in zip(fns, times, strict=True):
            start = time.perf_counter()
            fn()
            _sync(device)
            bucket.append((time.perf_counter() - start) * 1e3)
    return [statistics.median(t) for t in times]


@dataclass
class ProfileRow:
    """One mechanism's cost. FLOPs: one inference forward of the whole example batch."""

    mechanism: str
    act: str | None
    arr: bool
    dpa: bool
    params: int
    flops: int
    latency_ms: float | None
    train_step_ms: float | None
    batch_size: int

    def as_dict(self) -> dict:
        return asdict(self)


def _default_targets(inputs: tuple, num_classes: int, device: torch.device) -> torch.Tensor:
    n = inputs[0].shape[0]
    return (torch.arange(n, device=device) % num_classes).long()


def _infer_fn(model: nn.Module, inputs: tuple) -> Callable[[], None]:
    def infer() -> None:
        with torch.no_grad():
            model(*inputs)

    return infer


def _train_step_fn(
    model: Tuned,
    inputs: tuple,
    targets: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> Callable[[], None]:
    def train_step() -> None:
        out = _output_tensor(model(*inputs, targets=targets))
        loss = loss_fn(out, targets) + model.aux_loss()
        loss.backward()
        model.zero_grad(set_to_none=True)

    return train_step


def time_models(
    models: Sequence[Tuned],
    inputs: torch.Tensor | tuple,
    targets: torch.Tensor,
    *,
    repeats: int = 10,
    warmup: int = 2,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> tuple[list[float], list[float]]:
    """Median inference ms and train-step ms of each model (interleaved timing).

    Inference: forward under ``no_grad`` in eval mode. Train step: forward with targets
    (ARR/DPA memories update) + task loss + ``aux_loss()`` + backward, no optimiser step.
    Models are left in eval mode.
    """
    inputs = _as_tuple(inputs)
    device = inputs[0].device
    loss_fn = loss_fn or F.cross_entropy
    for m in models:
        m.eval()
    infer = _interleaved_median_ms([_infer_fn(m, inputs) for m in models], repeats, warmup, device)
    for m in models:
        m.train()
    steps = _interleaved_median_ms(
        [_train_step_fn(m, inputs, targets, loss_fn) for m in models], repeats, warmup, device
    )
    for m in models:
        m.eval()
    return infer, steps


def profile_mechanisms(
    build_model: Callable[[], nn.Module],
    example_input: torch.Tensor | tuple,
    num_classes: int,
    mechanisms: Sequence[str] = ("baseline", "raa", "dnrt", "dpa"),
    baseline_act: str | None = None,
    repeats: int = 10,
    warmup: int = 2,
    targets: torch.Tensor | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    tune_kwargs: dict | None = None,
) -> list[ProfileRow]:
    """Profile a fresh ``build_model()`` under each mechanism.

    ``baseline`` is the model as built (or with every activation set to ``baseline_act``,
    e.g. ``"relu"`` for the paper's Table 4); the others go through
    ``tune(build_model(), act, arr, dpa)`` from :func:`resolve_mechanism` names
    (``raa``, ``dnrt``, ``dpa``, ``gelu+arr``...). Every model is wrapped in :class:`Tuned`
    and materialised on ``example_input`` (a tensor or a tuple of model inputs), so the
    wrapper's overhead is the same for all. ``targets`` default to ``arange(B) % K``.
    Latencies are medians over ``repeats`` runs, timed round-robin across the mechanisms;
    ``repeats=0`` measures params and FLOPs only.
    """
    inputs = _as_tuple(example_input)
    device = inputs[0].device
    if targets is None:
        targets = _default_targets(inputs, num_classes, device)
    specs = []
    for mech in mechanisms:
        if mech == "baseline":
            specs.append(("baseline", baseline_act, False, False))
        else:
            specs.append((mech, *check_mechanism(mech)))
    batch = int(inputs[0].shape[0])
    models = []
    for _name, act, arr, dpa in specs:
        tuned = tune(
            build_model().to(device),
            act=act,
            arr=arr or None,
            dpa=dpa or None,
            num_classes=num_classes,
            **(tune_kwargs or {}),
        )
        models.append(tuned.materialize(*inputs))
    flops = [count_flops(m, inputs)[0] for m in models]
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in models[0].modules())
    if repeats > 0 and batch < 2 and has_bn:
        raise ValueError(
            "a training step of a BatchNorm model needs a batch of 2 or more "
            "(or repeats=0 for params and FLOPs only)"
        )
    if repeats > 0:
        latency, steps = time_models(
            models, inputs, targets, repeats=repeats, warmup=warmup, loss_fn=loss_fn
        )
    else:
        latency = steps = [None] * len(models)
    return [
        ProfileRow(name, act, arr, dpa, sum(p.numel() for p in m.parameters()), f, lat, step, batch)
        for (name, act, arr, dpa), m, f, lat, step in zip(
            specs, models, flops, latency, steps, strict=True
        )
    ]


def _ratio(value: float | None, base: float | None, fmt: str) -> str:
    if value is None or not base:
        return "–"
    return format(value / base, fmt)


def format_profile_table(rows: Sequence[ProfileRow]) -> str:
    """Markdown table of the rows, with ratios against the ``baseline`` row (else the first)."""
    if not rows:
        return ""
    base = next((r for r in rows if r.mechanism == "baseline"), rows[0])
    header = (
        "| mechanism | act | params | Δparams | GFLOPs | ×FLOPs | latency ms | ×latency "
        "| train step ms | ×train |"
    )
    lines = [header, "|:---|:---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        latency = "–" if r.latency_ms is None else f"{r.latency_ms:.2f}"
        step = "–" if r.train_step_ms is None else f"{r.train_step_ms:.2f}"
        lines.append(
            f"| {r.mechanism} | {r.act or 'as built'} | {r.params:,} | {r.params - base.params:+,} "
            f"| {r.flops / 1e9:.4f} | {_ratio(r.flops, base.flops, '.4f')} | {latency} "
            f"| {_ratio(r.latency_ms, base.latency_ms, '.2f')} | {step} "
            f"| {_ratio(r.train_step_ms, base.train_step_ms, '.2f')} |"
        )
    lines.append("")
    lines.append(
        f"FLOPs: one inference forward of a batch of {base.batch_size} "
        "(2 per multiply-add, torch FlopCounterMode + matvec/CPU-attention formulas); "
        "latency: median ms per forward (no_grad, eval); train step: forward with targets "
        "+ loss + aux loss + backward."
    )
    return "\n".join(lines) + "\n"
