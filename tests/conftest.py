"""Shared fixtures: where the real data lives (``DNRT_DATA`` or ``../shared/data``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def data_root() -> Path | None:
    env = os.environ.get("DNRT_DATA")
    root = Path(env) if env else REPO.parent / "shared" / "data"
    return root if root.is_dir() else None


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The real-data folder; skips (with the reason) only where it is absent, never in CI."""
    root = data_root()
    if root is None:
        if os.environ.get("CI"):
            pytest.fail("real data folder missing in CI (set DNRT_DATA or provide ../shared/data)")
        pytest.skip("real data not found: set DNRT_DATA or place shared/data beside the repo")
    return root
