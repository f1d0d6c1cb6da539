"""Per-epoch measurements of what ARR does to a run (``train.diagnostics: true``).

At the end of every epoch, on one fixed training batch (the first batch of epoch 0):

* ``diag_response_rms``: ``{site: mean_b ‖x_b‖₂ / √d}`` of the pooled response at each ARR
  site (for runs without ARR: at the sites the run's placement would use), so ReLU and DNRT
  runs are measured at the same places;
* ``diag_arr_loss``: ``{site: L_arr}`` (unweighted) at each ARR site;
* ``diag_task_grad_norm``, ``diag_arr_grad_norm``: ‖∇θ L_task‖₂ and ‖∇θ (λ · mean_j L_arr^j)‖₂
  over all parameters, ``diag_grad_ratio`` their quotient (ARR / task) and ``diag_grad_cos``
  the cosine between the two gradients;

and on every evaluation of the selection split, ``diag_pred_hist``: how many of its samples
are predicted as each class (a collapse onto few classes shows at once).

The probe forward runs in training mode with targets, like a training step, but leaves the
run untouched: buffers (BatchNorm statistics, ARR/DPA memories) and the RNG states are
restored, and gradients are taken with ``torch.autograd.grad`` (no ``.grad`` is written), so
a run with diagnostics trains exactly as one without.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from ..mechanisms.pooling import aggregate
from ..tuning.sites import default_arr_sites, match_any, split_site
from . import checkpoint as ckpt_io


def _sites(cfg: dict[str, Any], model: nn.Module, family: str) -> tuple[list[str], str]:
    """The run's ARR sites (``:in`` suffix = input) and pool, whether or not ARR is on."""
    mech = cfg["mech"]
    if mech.get("arr_sites"):
        sites = mech["arr_sites"]
        return ([sites] if isinstance(sites, str) else list(sites)), mech.get("arr_pool") or "auto"
    patterns, pool = default_arr_sites(model, family, mech.get("arr_placement"))
    return patterns, mech.get("arr_pool") or pool


class Diagnostics:
    """Measures a :class:`~dnrt_core.engine.trainer.Trainer`'s model once per epoch."""

    def __init__(self, trainer: Any):
        self.task = trainer.built.task
        self.data = trainer.built.data
        self.device = trainer.built.device
        self.tuned = trainer.model
        inner = self.tuned.model
        patterns, self.pool = _sites(trainer.cfg, inner, self.tuned.report.family)
        self.responses: dict[str, torch.Tensor] = {}
        self.recording = False
        self.site_names: list[str] = []
        for pattern in patterns:
            glob, on_input = split_site(pattern)
            for name, module in inner.named_modules():
                if name and match_any(name, glob):
                    site = name + (":in" if on_input else "")
                    self.site_names.append(site)
                    if on_input:
                        module.register_forward_pre_hook(
                            lambda _m, inputs, s=site: self._record(s, inputs[0])
                        )
                    else:
                        module.register_forward_hook(
                            lambda _m, _i, out, s=site: self._record(s, out)
                        )
        rng = ckpt_io.rng_state()
        try:
            batch = next(iter(self.task.train_batches(self.data, 0)))
        finally:
            ckpt_io.set_rng_state(rng)
        self.inputs, self.targets = self.task.batch_inputs(batch, self.device)
        self.hist: torch.Tensor | None = None

    def _record(self, site: str, x: torch.Tensor) -> None:
        if self.recording:
            self.responses[site] = aggregate(x, self.pool).detach()

    def measure(self) -> dict[str, Any]:
        """The probe-batch measurements (see the module docstring); the run is left as it was."""
        model = self.tuned
        buffers = {k: v.detach().clone() for k, v in model.named_buffers()}
        rng = ckpt_io.rng_state()
        was_training = model.training
        params = [p for p in model.parameters() if p.requires_grad]
        self.responses, self.recording = {}, True
        try:
            model.train()
            out = model(*self.inputs, targets=self.targets)
            task_loss = self.task.loss(out, self.targets, self.data)
            arr_losses = [float(x.detach()) for x in model._arr_losses]
            has_arr = bool(model._arr_losses) and model.arr_spec is not None
            g_task = torch.autograd.grad(task_loss, params, retain_graph=has_arr, allow_unused=True)
            record: dict[str, Any] = {"diag_task_grad_norm": _norm(g_task)}
            if has_arr:
                aux = model.arr_spec.arr_lambda * torch.stack(model._arr_losses).mean()
                g_arr = torch.autograd.grad(aux, params, allow_unused=True)
                arr_norm = _norm(g_arr)
                record["diag_arr_grad_norm"] = arr_norm
                record["diag_grad_ratio"] = arr_norm / max(record["diag_task_grad_norm"], 1e-30)
                record["diag_grad_cos"] = _cosine(g_task, g_arr)
                record["diag_arr_loss"] = dict(zip(model._arr_sites.values(), arr_losses,
                                                   strict=True))  # fmt: skip
        finally:
            self.recording = False
            model._arr_losses = []
            model.train(was_training)
            with torch.no_grad():
                for k, v in model.named_buffers():
                    v.copy_(buffers[k])
            ckpt_io.set_rng_state(rng)
        record["diag_response_rms"] = {
            site: float((r.float().norm(dim=1) / math.sqrt(max(r.shape[1], 1))).mean())
            for site, r in self.responses.items()
        }
        return record

    @contextlib.contextmanager
    def watch_predictions(self, split: str) -> Iterator[None]:
        """Count the predicted classes of every forward inside (the evaluation of ``split``).
        Graph tasks score index tensors into one full-graph forward: only those rows count."""
        index = self.data.splits.get(split)
        index = index if isinstance(index, torch.Tensor) else None
        counts = torch.zeros(self.data.num_classes, dtype=torch.long)

        def hook(_module, _inputs, out):
            logits = out[0] if isinstance(out, (tuple, list)) else out
            if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
                return
            pred = logits.detach().argmax(dim=1)
            if index is not None and index.numel() and len(pred) > int(index.max()):
                pred = pred[index.to(pred.device)]
            counts.add_(torch.bincount(pred.cpu(), minlength=len(counts))[: len(counts)])

        handle = self.tuned.register_forward_hook(hook)
        try:
            yield
        finally:
            handle.remove()
        self.hist = counts

    def pop_histogram(self) -> dict[str, Any]:
        hist, self.hist = self.hist, None
        return {} if hist is None else {"diag_pred_hist": hist.tolist()}


def _norm(grads) -> float:
    return math.sqrt(sum(float(g.double().pow(2).sum()) for g in grads if g is not None))


def _cosine(a, b) -> float:
    dot = sum(float((x.double() * y.double()).sum()) for x, y in zip(a, b, strict=True)
              if x is not None and y is not None)  # fmt: skip
    na, nb = _norm(a), _norm(b)
    return dot / (na * nb) if na > 0 and nb > 0 else float("nan")
