"""Error types reported to the user in one line by the CLI (exit code 2)."""

from __future__ import annotations


class DataError(ValueError):
    """A data set is missing or malformed."""
