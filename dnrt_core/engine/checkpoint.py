"""Crash-safe checkpoints (temp file + fsync + rename) that load with ``weights_only=True``."""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint is missing, truncated, corrupt or does not fit the run."""


def _write_error(exc: BaseException, path: Path) -> OSError | None:
    """The OS error behind a failed write (torch wraps it in a RuntimeError), naming ``path``."""
    while exc is not None and not isinstance(exc, OSError):
        exc = exc.__context__ or exc.__cause__
    if exc is None:
        return None
    return OSError(exc.errno, exc.strerror or str(exc), str(path))


def _write_atomic(path: Path, mode: str, write) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        error = _write_error(exc, path) if isinstance(exc, Exception) else None
        if error is not None:
            raise error from None
        raise


def save_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``,
    so a crash leaves either the old or the new file, never a partial one. A failed write
    (disk full) removes the temp file and raises the ``OSError`` naming ``path``."""
    _write_atomic(Path(path), "wb", lambda fh: torch.save(obj, fh))


def write_text_atomic(text: str, path: str | Path) -> None:
    """``text`` to ``path`` the same crash-safe way as :func:`save_atomic`."""
    _write_atomic(Path(path), "w", lambda fh: fh.write(text))


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a dnrt checkpoint (``weights_only=True``); one-line :class:`CheckpointError` if bad."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt ({first})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT or "model" not in ckpt:
        raise CheckpointError(f"{path} is not a dnrt checkpoint")
    return ckpt


def load_model_state(model: torch.nn.Module, state: dict[str, Any], where: str | Path) -> None:
    """``model.load_state_dict(state)``; a checkpoint of another model is a one-line
    :class:`CheckpointError` naming the first differing key or shape."""
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        own = model.state_dict()
        shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        parts = []
        if shapes:
            k = shapes[0]
            parts.append(f"{k} is {tuple(state[k].shape)} there, {tuple(own[k].shape)} here")
        if missing:
            parts.append(f"{len(missing)} missing key(s) ({missing[0]}, ...)")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s) ({unexpected[0]}, ...)")
        detail = "; ".join(parts) or str(exc).strip().splitlines()[0]
        raise CheckpointError(f"{where} does not fit this model: {detail}") from None


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states in a ``weights_only``-loadable form."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npst = state["numpy"]
    np.random.set_state(
        ("MT19937", npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"],
         npst["cached_gaussian"])
    )  # fmt: skip
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
