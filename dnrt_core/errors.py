"""Errors reported to the user in one line, the one way of naming an unknown choice, and
:func:`describe`, which turns any failure into an exit code and one line (the CLI's error
boundary). Every layer may import this module; it imports nothing of dnrt.

Exit codes: 2 bad input (config, data, paths, checkpoints), 1 an environment failure
(disk full, device lost, out of memory) or a non-finite loss, 130 interrupted.
"""

from __future__ import annotations

import difflib
import errno
import sys

EXIT_ENVIRONMENT = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130

#: OS errors that are the machine's doing, not the user's input
ENVIRONMENT_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.ENOMEM, errno.EROFS, errno.ESTALE}
)


class DataError(ValueError):
    """A data set is missing or malformed."""


class ConfigError(ValueError):
    """A bad configuration key or value."""


class RunError(ValueError):
    """A run cannot start or continue (its folder, device, or resume state)."""


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/Inf; the last good checkpoint is kept (exit 1)."""


class EnvironmentFailure(RuntimeError):
    """The machine failed the run: disk full, device lost (exit 1)."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run; the message says what its folder holds now."""


def closest_name(name: str, choices: list[str]) -> str | None:
    """The choice closest to ``name`` (difflib ratio >= 0.4), or ``None``."""
    match = difflib.get_close_matches(name, choices, n=1, cutoff=0.4)
    return match[0] if match else None


def unknown_name_error(kind: str, name: str, choices: list[str]) -> ValueError:
    """A ValueError listing the valid names and the closest match."""
    hint = closest_name(str(name), choices)
    msg = f"unknown {kind} {name!r}"
    if hint:
        msg += f" (did you mean {hint!r}?)"
    return ValueError(f"{msg}; valid: {', '.join(choices)}")


# --------------------------------------------------------------------------- the boundary


def first_line(exc: BaseException) -> str:
    """The message of ``exc`` in one line. An error re-raised from a DataLoader worker
    (``Caught X in DataLoader worker process 0.`` + a traceback) gives the original one."""
    text = str(exc).strip()
    if text.startswith("Caught ") and "Original Traceback" in text:
        last = [ln for ln in text.splitlines() if ln.strip()][-1].strip()
        head, sep, rest = last.partition(": ")
        text = rest if sep and " " not in head else last
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[0].strip() if lines else type(exc).__name__


def _os_error_line(exc: OSError) -> str:
    what = exc.strerror or first_line(exc)
    return f"{what}: {exc.filename}" if exc.filename is not None else what


def describe(exc: BaseException) -> tuple[int, str]:
    """``(exit code, one-line message)`` for any exception a command can end with."""
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED, str(exc) or "interrupted"
    if isinstance(exc, (EnvironmentFailure, NonFiniteLossError)):
        return EXIT_ENVIRONMENT, first_line(exc)
    torch = sys.modules.get("torch")
    oom = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    if oom is not None and isinstance(exc, oom):
        return EXIT_ENVIRONMENT, f"out of device memory ({first_line(exc)}); try a smaller batch"
    if isinstance(exc, MemoryError):
        return EXIT_ENVIRONMENT, "out of memory; try a smaller batch or data set"
    if isinstance(exc, OSError):
        code = EXIT_ENVIRONMENT if exc.errno in ENVIRONMENT_ERRNOS else EXIT_BAD_INPUT
        return code, _os_error_line(exc)
    if isinstance(exc, KeyError):  # str(KeyError) is the repr of the key
        return EXIT_BAD_INPUT, f"missing key {exc.args[0]!r}" if exc.args else "missing key"
    if isinstance(exc, (ValueError, TypeError)):
        return EXIT_BAD_INPUT, first_line(exc)
    text = first_line(exc)
    if isinstance(exc, RuntimeError) and any(s in text for s in ("CUDA", "NCCL", "cuDNN")):
        return EXIT_ENVIRONMENT, f"device failure: {text}"
    return EXIT_ENVIRONMENT, (
        f"internal error ({type(exc).__name__}: {text}); rerun with --debug for the traceback"
    )
