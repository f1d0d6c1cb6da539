"""Export a tuned model for inference: a ``torch.export`` program (``.pt2``) or ONNX.

In eval mode ARR and DPA are inactive (DPA is its TAU threshold), and RAA records its
functional form (:func:`dnrt_core.mechanisms.raa_fused.traceable_raa`) instead of the fused
CPU kernels, so the exported graph holds standard ops only and runs without dnrt:

    >>> tuned = tune(model, act="raa", arr=True, example_inputs=(x,)).eval()
    >>> program = export_program(tuned, (x,))          # torch.export.ExportedProgram
    >>> export_onnx(tuned, (x,), "model.onnx")         # the dynamo exporter (default)
    >>> export_onnx(tuned, (x,), "model.onnx", dynamo=False)  # the TorchScript exporter

The first input's dimension 0 (the batch) is dynamic where the exporter can keep it so.
``dnrt export RUN/best.pt`` (:func:`export_run`) does this for a saved run.
"""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path

import torch
from torch import nn

FORMATS = ("onnx", "pt2")
#: what the ONNX dynamo exporter imports (the ``export`` extra of the package)
_ONNX_PACKAGES = ("onnx", "onnxscript")


def _check_inputs(inputs: tuple) -> tuple:
    if isinstance(inputs, torch.Tensor):
        inputs = (inputs,)
    if not isinstance(inputs, tuple):
        raise TypeError(f"inputs must be a tuple of model inputs, got {type(inputs).__name__}")
    return inputs


def _dynamic_batch(model: nn.Module, inputs: tuple):
    """``dynamic_shapes`` where dim 0 of the first (dense) input is ``Dim.AUTO`` (dynamic
    unless the model fixes it); ``None`` (static) when torch lacks ``Dim.AUTO`` or an input
    is sparse (a graph: its size fixes the node count, and fake sparse products with
    symbolic sizes are unsupported)."""
    auto = getattr(torch.export.Dim, "AUTO", None)
    sparse = any(isinstance(t, torch.Tensor) and t.layout != torch.strided for t in inputs)
    if auto is None or sparse:
        return None
    specs = []
    for i, t in enumerate(inputs):
        dense = isinstance(t, torch.Tensor) and t.layout == torch.strided and t.dim() > 0
        specs.append({0: auto} if i == 0 and dense else None)
    params = list(inspect.signature(model.forward).parameters.values())
    if params and params[0].kind is inspect.Parameter.VAR_POSITIONAL:  # Tuned.forward(*args)
        return (tuple(specs),)
    return tuple(specs)


def _reject_sparse(inputs: tuple, what: str) -> None:
    for t in inputs:
        if isinstance(t, torch.Tensor) and t.layout != torch.strided:
            raise ValueError(
                f"{what} sparse ({t.layout}) inputs such as a graph's adjacency; "
                "dnrt_core.tools.export.export_program traces such a model in memory"
            )


def export_program(
    model: nn.Module, inputs: tuple, *, dynamic_batch: bool = True
) -> torch.export.ExportedProgram:
    """``torch.export.export`` of ``model`` in eval mode on example ``inputs``."""
    inputs = _check_inputs(inputs)
    model.eval()
    shapes = _dynamic_batch(model, inputs) if dynamic_batch else None
    return torch.export.export(model, inputs, dynamic_shapes=shapes)


def export_pt2(model: nn.Module, inputs: tuple, path: str | Path, *,
               dynamic_batch: bool = True) -> Path:  # fmt: skip
    """Write :func:`export_program` to ``path`` (load it with ``torch.export.load``)."""
    _reject_sparse(_check_inputs(inputs), "torch.export.save writes no")
    path = Path(path)
    torch.export.save(export_program(model, inputs, dynamic_batch=dynamic_batch), path)
    return path


def export_onnx(
    model: nn.Module,
    inputs: tuple,
    path: str | Path,
    *,
    dynamo: bool = True,
    dynamic_batch: bool = True,
    opset: int | None = None,
    optimize: bool = True,
) -> Path:
    """Write ``model`` (eval mode) as one ONNX file with ``torch.onnx.export``: the dynamo
    exporter (``dynamo=True``, needs ``onnx`` and ``onnxscript``; ``optimize``: run its graph
    optimiser) or the TorchScript one."""
    inputs = _check_inputs(inputs)
    _reject_sparse(inputs, "the ONNX exporters take no")
    if dynamo:
        missing = [p for p in _ONNX_PACKAGES if importlib.util.find_spec(p) is None]
        if missing:
            raise ValueError(
                f"ONNX export needs {' and '.join(missing)}: pip install 'dnrt[export]'"
            )
    path = Path(path)
    model.eval()
    names = [f"input_{i}" for i in range(len(inputs))]
    if dynamo:
        shapes = _dynamic_batch(model, inputs) if dynamic_batch else None
        torch.onnx.export(model, inputs, path, dynamo=True, dynamic_shapes=shapes,
                          opset_version=opset, external_data=False, optimize=optimize,
                          verbose=False)  # fmt: skip
    else:
        axes = {names[0]: {0: "batch"}} if dynamic_batch and inputs else None
        torch.onnx.export(model, inputs, path, dynamo=False, input_names=names,
                          dynamic_axes=axes, opset_version=opset)  # fmt: skip
    return path


def _first_tensor(out) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)  # Hugging Face ModelOutput
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(out, (tuple, list)) and out:
        return _first_tensor(out[0])
    raise TypeError(f"cannot compare a model output of type {type(out).__name__}")


def max_difference(model: nn.Module, exported: str | Path | torch.export.ExportedProgram,
                   inputs: tuple) -> float:  # fmt: skip
    """Largest absolute difference between the eager ``model`` (eval mode) and an exported
    program or ONNX file (run with ``onnxruntime``) on ``inputs``."""
    inputs = _check_inputs(inputs)
    model.eval()
    with torch.no_grad():
        ref = _first_tensor(model(*inputs))
        if isinstance(exported, torch.export.ExportedProgram) or str(exported).endswith(".pt2"):
            program = exported
            if not isinstance(program, torch.export.ExportedProgram):
                program = torch.export.load(str(exported))
            out = _first_tensor(program.module()(*inputs))
            return float((out - ref).abs().max())
    import onnxruntime

    session = onnxruntime.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    feeds = {i.name: t.numpy() for i, t in zip(session.get_inputs(), inputs, strict=True)}
    out = torch.from_numpy(session.run(None, feeds)[0])
    return float((out - ref).abs().max())


def export_run(
    checkpoint: str | Path,
    fmt: str = "onnx",
    out: str | Path | None = None,
    *,
    data_dir: str | None = None,
    dynamo: bool = True,
) -> tuple[Path, float | None]:
    """Export a saved run's model (weights and memories restored, on CPU) with the task's
    example inputs (a training batch); default file: the checkpoint with ``.onnx`` / ``.pt2``.

    Returns the file and its largest difference from the eager model on those inputs
    (``None`` for ONNX when ``onnxruntime`` is not installed)."""
    from ..engine import RunError, load_run

    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; valid: {', '.join(FORMATS)}")
    checkpoint = Path(checkpoint)
    built, _ = load_run(checkpoint, data_dir=data_dir, device="cpu")
    model = built.model.eval()
    inputs = tuple(built.task.example_inputs(built.data, built.device))
    path = Path(out) if out is not None else checkpoint.with_suffix(f".{fmt}")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if fmt == "pt2":
            export_pt2(model, inputs, path)
        else:
            export_onnx(model, inputs, path, dynamo=dynamo)
    except (ValueError, TypeError):
        raise
    except Exception as exc:  # an exporter's own error: one line for the CLI
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RunError(f"{fmt} export of {checkpoint} failed: {first}") from exc
    if fmt == "onnx" and importlib.util.find_spec("onnxruntime") is None:
        return path, None
    return path, max_difference(model, path, inputs)
