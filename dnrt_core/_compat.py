"""Old import paths (before the mechanisms / engine / tools split) keep working.

``import dnrt_core.raa`` or ``from dnrt_core.compare import build_table`` load the module's
new home and register it under the old name too, so both names are one module object
(monkeypatching either patches both). ``dnrt_core.engine`` and ``dnrt_core.tuning`` kept
their names as packages that re-export what the old modules held.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from types import ModuleType

#: old module name (under dnrt_core) -> its new home
MOVED = {
    "activations": "dnrt_core.mechanisms.activations",
    "arr": "dnrt_core.mechanisms.arr",
    "dpa": "dnrt_core.mechanisms.dpa",
    "gdn": "dnrt_core.mechanisms.gdn",
    "pooling": "dnrt_core.mechanisms.pooling",
    "raa": "dnrt_core.mechanisms.raa",
    "distributed": "dnrt_core.mechanisms.distributed",
    "cpu_kernels": "dnrt_core.kernels.loader",
    "checkpoint": "dnrt_core.engine.checkpoint",
    "config": "dnrt_core.engine.config",
    "data": "dnrt_core.engine.data",
    "metrics": "dnrt_core.engine.metrics",
    "plugins": "dnrt_core.engine.plugins",
    "task": "dnrt_core.engine.task",
    "compare": "dnrt_core.tools.compare",
    "plots": "dnrt_core.tools.plots",
    "profile": "dnrt_core.tools.profile",
}


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str):
        self.target = target

    def create_module(self, spec) -> ModuleType:
        module = importlib.import_module(self.target)
        self.home_spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # already executed at its new home; the import system just set the alias spec
        module.__spec__ = self.home_spec


class _AliasFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        head, _, tail = fullname.partition(".")
        if head != "dnrt_core" or tail not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, _AliasLoader(MOVED[tail]))


def install() -> None:
    """Put the alias finder on ``sys.meta_path`` (once)."""
    if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _AliasFinder())


def old_module(name: str) -> ModuleType | None:
    """The module an old ``dnrt_core.<name>`` attribute stands for, or ``None``."""
    if name not in MOVED:
        return None
    return importlib.import_module(f"dnrt_core.{name}")
