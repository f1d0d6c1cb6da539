"""Errors reported to the user in one line by the CLI (exit code 2), and the one way of
naming an unknown choice. Every layer may import this module; it imports nothing of dnrt."""

from __future__ import annotations

import difflib


class DataError(ValueError):
    """A data set is missing or malformed."""


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
