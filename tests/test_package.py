"""The package's public API, the plugin API and the old import paths."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import dnrt_core


def test_public_api():
    from dnrt_core import (  # noqa: F401
        ARR,
        DPA,
        RAA,
        TAU,
        available_activations,
        get_activation,
        tune,
    )

    assert set(dnrt_core.__all__) <= set(dir(dnrt_core)) | {
        "ConfigOption",
        "Task",
        "TaskData",
        "make_loader",
        "EpochSampler",
    }


def test_plugin_api_from_where_the_readme_says():
    from dnrt_core import ConfigOption, EpochSampler, Task, TaskData, make_loader
    from dnrt_core.engine.config import ConfigOption as engine_option
    from dnrt_core.engine.data import EpochSampler as engine_sampler
    from dnrt_core.engine.task import Task as engine_task

    assert Task is engine_task and EpochSampler is engine_sampler and ConfigOption is engine_option
    assert callable(make_loader) and TaskData.__dataclass_fields__["num_classes"]


@pytest.mark.parametrize(
    "old,new",
    [
        ("dnrt_core.raa", "dnrt_core.mechanisms.raa"),
        ("dnrt_core.arr", "dnrt_core.mechanisms.arr"),
        ("dnrt_core.activations", "dnrt_core.mechanisms.activations"),
        ("dnrt_core.cpu_kernels", "dnrt_core.kernels.loader"),
        ("dnrt_core.config", "dnrt_core.engine.config"),
        ("dnrt_core.task", "dnrt_core.engine.task"),
        ("dnrt_core.compare", "dnrt_core.tools.compare"),
        ("dnrt_core.plots", "dnrt_core.tools.plots"),
    ],
)
def test_old_import_paths_are_the_new_modules(old, new):
    assert importlib.import_module(old) is importlib.import_module(new)
    assert importlib.import_module(new).__spec__.name == new


def test_old_names_still_import():
    from dnrt_core import cpu_kernels
    from dnrt_core.engine import Trainer, run
    from dnrt_core.tuning import ARRSpec, resolve_mechanism, tune

    assert cpu_kernels.status() and callable(run) and Trainer and ARRSpec and tune
    assert resolve_mechanism("dnrt") == ("raa", True, False)


def test_mechanisms_and_tune_do_not_load_the_engine():
    code = (
        "import sys, dnrt_core, torch\n"
        "m = dnrt_core.tune(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.GELU()),"
        " act='raa')\n"
        "print(sorted(k for k in sys.modules if k.startswith(('dnrt_core.engine', "
        "'dnrt_core.tools', 'tasks'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
