"""Fused float32 CPU kernels for RAA and ARR: the C sources (``raa_cpu.c``, ``arr_cpu.c``)
and :mod:`.loader`, which compiles them on first use, caches and loads them."""

from .loader import (
    build,
    capturing_graph,
    compiler,
    enabled,
    library_for,
    load,
    set_enabled,
    status,
)

__all__ = [
    "build",
    "capturing_graph",
    "compiler",
    "enabled",
    "library_for",
    "load",
    "set_enabled",
    "status",
]
