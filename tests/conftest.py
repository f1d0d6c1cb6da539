"""Shared fixtures: where the real data lives (``DNRT_DATA`` or ``../shared/data``); the C
compiler and the fused CPU kernels (required in CI, which has a compiler)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config) -> None:
    """Under pytest-xdist (the README's ``-n auto``) every worker, and every CLI process its
    tests start, runs one intra-op thread: two workers of two threads each on 2 cores spend
    their time waiting at OpenMP barriers."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
        import torch

        torch.set_num_threads(1)


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


def _unavailable(reason: str):
    """Fail in CI, skip (with the reason) elsewhere."""
    (pytest.fail if os.environ.get("CI") else pytest.skip)(reason)


@pytest.fixture(scope="session")
def c_compiler() -> str:
    """Path of the C compiler the kernels are built with."""
    from dnrt_core.kernels import loader as cpu_kernels

    cc = cpu_kernels.compiler()
    if cc is None:
        _unavailable("no C compiler")
    return cc


@pytest.fixture
def cpu_kernel_library():
    """The loaded fused CPU kernel library (dnrt_core.cpu_kernels)."""
    from dnrt_core.kernels import loader as cpu_kernels

    lib = cpu_kernels.load()
    if lib is None:
        _unavailable(f"fused CPU kernels unavailable: {cpu_kernels.status()}")
    return lib


@pytest.fixture(scope="session")
def onnx_tools():
    """onnxruntime plus what the ONNX dynamo exporter needs (the ``export`` extra)."""
    missing = [name for name in ("onnx", "onnxscript", "onnxruntime") if not _importable(name)]
    if missing:
        _unavailable(f"{', '.join(missing)} not installed (pip install 'dnrt[export]')")
    import onnxruntime

    return onnxruntime


@pytest.fixture(scope="session")
def transformers():
    """The Hugging Face ``transformers`` package (the ``hf`` extra)."""
    if not _importable("transformers"):
        _unavailable("transformers not installed (pip install 'dnrt[hf]')")
    import transformers

    transformers.logging.set_verbosity_error()
    return transformers


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of tiny models: faster than two, and steady when the
    2 cores are shared (threads waiting at OpenMP barriers made such tests up to 30x slower)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_toy_plugin(where: Path) -> Path:
    """Write a plugin distribution (``toy`` works, ``broken`` fails to import) into ``where``;
    put the returned folder on sys.path / PYTHONPATH to register it."""
    site = where / "site"
    site.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "tests" / "toy_task.py", site / "toy_plugin.py")
    dist = site / "toy_plugin-0.1.dist-info"
    dist.mkdir(exist_ok=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[dnrt.tasks]\ntoy = toy_plugin:ToyTask\nbroken = no_such_module_xyz:Task\n"
    )
    return site


@pytest.fixture
def toy_plugin(tmp_path, monkeypatch):
    """The toy plugin registered in this process (and exported in PYTHONPATH for subprocesses)."""
    import sys

    site = make_toy_plugin(tmp_path)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    yield site
    sys.modules.pop("toy_plugin", None)
