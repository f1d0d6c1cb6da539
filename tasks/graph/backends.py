"""Graph backends: which library does message passing (``pyg`` default, ``dgl`` optional).

A backend makes the convolution layers and turns an ``edge_index`` into the graph
object those layers take, so one model definition (:mod:`tasks.graph.models`) runs
on both with identical parameters. Every conv is called as ``conv(x, graph)``.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

from .graph_data import unique_sorted

BACKENDS = ("pyg", "dgl")
MODELS = ("gcn", "sage")
SAGE_AGGRS = ("mean", "max", "pool")

DGL_HINT = 'backend "dgl" needs DGL: pip install "dnrt[dgl]" (dgl==1.1.3)'


class Backend:
    """Interface: ``conv(model, in_dim, out_dim, aggr)`` and
    ``graph(edge_index, num_nodes, model)``."""

    name = ""

    def conv(self, model: str, in_dim: int, out_dim: int, aggr: str = "mean") -> nn.Module:
        """A ``gcn`` or ``sage`` layer; ``aggr`` (mean | max | pool) is SAGE's aggregator."""
        raise NotImplementedError

    def graph(self, edge_index: torch.Tensor, num_nodes: int, model: str) -> Any:
        """The structure convs of ``model`` take, built from ``(2, E)`` ``edge_index``
        (it has ``.to(device)`` and ``.device``)."""
        raise NotImplementedError


def adjacency_t(edge_index: torch.Tensor, num_nodes: int, *, gcn: bool) -> torch.Tensor:
    """Transposed adjacency as a ``torch.sparse_csr`` ``(N, N)`` matrix (row = target node),
    duplicates merged. ``gcn``: exactly one self-loop per node and the weights
    ``d_dst^-1/2 · d_src^-1/2`` (d = in-degree incl. the loop), i.e. PyG's ``gcn_norm``;
    otherwise all weights are 1 (for SAGE's mean)."""
    src, dst = edge_index.cpu().numpy().astype(np.int64, copy=False)
    if gcn:
        loops = np.arange(num_nodes, dtype=np.int64)
        keep = src != dst
        src, dst = np.concatenate([src[keep], loops]), np.concatenate([dst[keep], loops])
    key = unique_sorted(dst * num_nodes + src)
    rows, cols = key // num_nodes, key % num_nodes
    counts = np.bincount(rows, minlength=num_nodes)
    if gcn:
        dinv = 1.0 / np.sqrt(np.maximum(counts, 1)).astype(np.float32)
        values = dinv[rows] * dinv[cols]
    else:
        values = np.ones(len(rows), dtype=np.float32)
    crow = np.concatenate([[0], np.cumsum(counts)])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(
            torch.from_numpy(crow),
            torch.from_numpy(cols),
            torch.from_numpy(values),
            size=(num_nodes, num_nodes),
            check_invariants=False,
        )


class PyGBackend(Backend):
    """``torch_geometric.nn.GCNConv`` / ``SAGEConv`` (:mod:`tasks.graph.pyg_conv`)
    on a precomputed sparse adjacency (sparse-matrix products: several times faster on CPU
    than PyG's edge-list gather/scatter).

    The graph is :func:`adjacency_t`; GCN's normalisation is part of it, so ``GCNConv``
    runs with ``normalize=False`` (PyG's ``GCNNorm`` pattern).
    """

    name = "pyg"

    def conv(self, model: str, in_dim: int, out_dim: int, aggr: str = "mean") -> nn.Module:
        from .pyg_conv import SparseGCNConv, SparseSAGEConv

        if model == "gcn":
            return SparseGCNConv(in_dim, out_dim)
        if model == "sage":
            return SparseSAGEConv(in_dim, out_dim, aggr)
        raise ValueError(f"unknown graph model {model!r}; valid: {', '.join(MODELS)}")

    def graph(self, edge_index: torch.Tensor, num_nodes: int, model: str) -> torch.Tensor:
        return adjacency_t(edge_index, num_nodes, gcn=model == "gcn")


class DGLBackend(Backend):
    """DGL ``GraphConv``-based twins of the PyG layers (:mod:`tasks.graph.dgl_conv`)."""

    name = "dgl"

    def __init__(self) -> None:
        from . import dgl_conv

        self._conv = dgl_conv

    def conv(self, model: str, in_dim: int, out_dim: int, aggr: str = "mean") -> nn.Module:
        if model == "gcn":
            return self._conv.DGLGCNConv(in_dim, out_dim)
        if model == "sage":
            return self._conv.DGLSAGEConv(in_dim, out_dim, aggr)
        raise ValueError(f"unknown graph model {model!r}; valid: {', '.join(MODELS)}")

    def graph(self, edge_index: torch.Tensor, num_nodes: int, model: str) -> Any:
        import dgl

        g = dgl.graph((edge_index[0], edge_index[1]), num_nodes=num_nodes)
        return self._conv.gcn_graph(g) if model == "gcn" else g


def dgl_available() -> bool:
    try:
        import dgl  # noqa: F401
    except Exception:  # ImportError, or a DGL build that does not fit this torch
        return False
    return True


def get_backend(name: str) -> Backend:
    """The backend called ``name``; a one-line error when it is unknown or not installed."""
    if name == "pyg":
        return PyGBackend()
    if name == "dgl":
        if not dgl_available():
            raise ValueError(DGL_HINT)
        return DGLBackend()
    raise ValueError(f"unknown graph backend {name!r}; valid: {', '.join(BACKENDS)}")
