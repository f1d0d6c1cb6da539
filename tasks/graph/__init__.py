"""The ``graph`` task plugin: GCN / GraphSAGE node classification and fraud detection."""

from .task import GraphTask

__all__ = ["GraphTask"]
