"""DGL twins of PyG's ``GCNConv`` and ``SAGEConv`` (mean / max / pool): same parameter names,
shapes, order and initialisation, so a state_dict moves between backends and, for the same seed,
both give the same weights and (up to float rounding) the same outputs.

Propagation is DGL's ``GraphConv`` without weights: ``norm="none"`` for GCN (its normalisation
applied as node scalings), ``norm="right"`` (neighbour mean) for SAGE; SAGE's max and pool
use ``update_all`` with a max reducer.
"""

from __future__ import annotations

import dgl
import torch
from dgl.nn import GraphConv
from torch import nn

from .backends import SAGE_AGGRS

GCN_NORM = "gcn_norm"


def gcn_graph(g: dgl.DGLGraph) -> dgl.DGLGraph:
    """``g`` with exactly one self-loop per node and ``ndata["gcn_norm"]`` = ``d^-1/2``
    (d = in-degree incl. the loop, as PyG's ``gcn_norm``): edge ``j -> i`` weighs
    ``d_j^-1/2 · d_i^-1/2``."""
    g = dgl.add_self_loop(dgl.remove_self_loop(g))
    deg = g.in_degrees().float()
    g.ndata[GCN_NORM] = deg.pow(-0.5).masked_fill(deg == 0, 0.0)
    return g


class DGLGCNConv(nn.Module):
    """``Â · (x W^T) + b`` with Â the symmetric-normalised adjacency with self-loops.

    Shapes: ``x`` ``(N, in_dim)`` -> ``(N, out_dim)``. Parameters ``bias`` ``(out,)``,
    ``lin.weight`` ``(out, in)`` exactly as ``torch_geometric.nn.GCNConv``.
    """

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.lin = nn.Linear(in_dim, out_dim, bias=False)
        self.bias = nn.Parameter(torch.empty(out_dim))
        self.propagate = GraphConv(
            in_dim, out_dim, norm="none", weight=False, bias=False, allow_zero_in_degree=True
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.lin.weight)  # PyG: glorot
        nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor, g: dgl.DGLGraph) -> torch.Tensor:
        if GCN_NORM not in g.ndata:
            g = gcn_graph(g)
        # the edge weight d_j^-1/2 d_i^-1/2 as two node scalings around an unweighted sum:
        # DGL's copy-and-sum kernel is far faster on CPU (a Tolokers GCN step: 658 -> 61 ms)
        norm = g.ndata[GCN_NORM].unsqueeze(-1)
        return self.propagate(g, self.lin(x) * norm) * norm + self.bias


class DGLSAGEConv(nn.Module):
    """GraphSAGE: ``lin_l(agg_{j in N(i)} x_j) + lin_r(x_i)`` with ``aggr`` ``mean``,
    ``max`` or ``pool`` (``max`` of ``relu(lin(x_j))``, DGL's ``aggregator_type="pool"``).

    Shapes: ``x`` ``(N, in_dim)`` -> ``(N, out_dim)``. Parameters (``lin.*`` for pool),
    ``lin_l.weight``, ``lin_l.bias``, ``lin_r.weight`` exactly as
    ``torch_geometric.nn.SAGEConv``; nodes without in-edges aggregate to 0 as there.
    """

    def __init__(self, in_dim: int, out_dim: int, aggr: str = "mean"):
        super().__init__()
        if aggr not in SAGE_AGGRS:
            raise ValueError(f"unknown SAGE aggregator {aggr!r}; valid: {', '.join(SAGE_AGGRS)}")
        self.aggr = aggr
        if aggr == "pool":
            self.lin = nn.Linear(in_dim, in_dim, bias=True)
        self.lin_l = nn.Linear(in_dim, out_dim, bias=True)
        self.lin_r = nn.Linear(in_dim, out_dim, bias=False)
        self.propagate = GraphConv(
            in_dim, in_dim, norm="right", weight=False, bias=False, allow_zero_in_degree=True
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.aggr == "pool":
            self.lin.reset_parameters()
        self.lin_l.reset_parameters()
        self.lin_r.reset_parameters()

    def _max(self, g: dgl.DGLGraph, h: torch.Tensor) -> torch.Tensor:
        with g.local_scope():
            g.srcdata["h"] = h
            g.update_all(dgl.function.copy_u("h", "m"), dgl.function.max("m", "neigh"))
            return g.dstdata["neigh"]

    def forward(self, x: torch.Tensor, g: dgl.DGLGraph) -> torch.Tensor:
        if self.aggr == "mean":
            neigh = self.propagate(g, x)
        else:
            neigh = self._max(g, torch.relu(self.lin(x)) if self.aggr == "pool" else x)
        return self.lin_l(neigh) + self.lin_r(x)
