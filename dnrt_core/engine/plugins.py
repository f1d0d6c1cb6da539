"""Task discovery through the ``dnrt.tasks`` entry-point group (built-in tasks too)."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

from ..errors import unknown_name_error
from .task import Task

ENTRY_POINT_GROUP = "dnrt.tasks"


class PluginError(ValueError):
    """A task plugin is unknown or failed to load (reported in one line)."""


@dataclass
class TaskEntry:
    name: str
    target: str  # "module:attr"
    source: str  # distribution that declares it
    entry_point: EntryPoint

    def load(self) -> Task:
        try:
            obj = self.entry_point.load()
        except Exception as exc:
            raise PluginError(
                f"task plugin {self.name!r} ({self.target}, from {self.source}) failed to import: "
                f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            ) from None
        task = obj() if isinstance(obj, type) else obj
        if not isinstance(task, Task):
            raise PluginError(f"task plugin {self.name!r} ({self.target}) is not a dnrt_core.Task")
        if not task.name:
            task.name = self.name
        return task


def discover() -> dict[str, TaskEntry]:
    """All registered tasks by name (first declaration wins)."""
    found: dict[str, TaskEntry] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        source = f"{dist.name} {dist.version}" if dist is not None else "unknown"
        found.setdefault(ep.name, TaskEntry(ep.name, ep.value, source, ep))
    return dict(sorted(found.items()))


def load_task(name: str) -> Task:
    tasks = discover()
    if name not in tasks:
        raise PluginError(str(unknown_name_error("task", name, list(tasks))))
    return tasks[name].load()
