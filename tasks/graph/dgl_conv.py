"""DGL twins of PyG's ``GCNConv`` and ``SAGEConv`` (mean): same parameter names, shapes,
order and initialisation, so a state_dict moves between backends and, for the same seed,
both give the same weights and (up to float rounding) the same outputs.

Propagation is DGL's ``GraphConv`` without weights (``norm="none"`` with explicit
edge weights for GCN, ``norm="right"`` = neighbour mean for SAGE).
"""

from __future__ import annotations

import dgl
import torch
from dgl.nn import GraphConv
from torch import nn

GCN_NORM = "gcn_norm"


def gcn_graph(g: dgl.DGLGraph) -> dgl.DGLGraph:
    """``g`` with exactly one self-loop per node and the GCN edge weight
    ``d_dst^-1/2 · d_src^-1/2`` (d = in-degree incl. the loop, as PyG's ``gcn_norm``)
    in ``edata["gcn_norm"]``."""
    g = dgl.add_self_loop(dgl.remove_self_loop(g))
    deg = g.in_degrees().float()
    dinv = deg.pow(-0.5).masked_fill(deg == 0, 0.0)
    src, dst = g.edges()
    g.edata[GCN_NORM] = dinv[src] * dinv[dst]
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
        if GCN_NORM not in g.edata:
            g = gcn_graph(g)
        return self.propagate(g, self.lin(x), edge_weight=g.edata[GCN_NORM]) + self.bias


class DGLSAGEConv(nn.Module):
    """GraphSAGE (mean): ``lin_l(mean_{j in N(i)} x_j) + lin_r(x_i)``.

    Shapes: ``x`` ``(N, in_dim)`` -> ``(N, out_dim)``. Parameters ``lin_l.weight``,
    ``lin_l.bias``, ``lin_r.weight`` exactly as ``torch_geometric.nn.SAGEConv``.
    """

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.lin_l = nn.Linear(in_dim, out_dim, bias=True)
        self.lin_r = nn.Linear(in_dim, out_dim, bias=False)
        self.propagate = GraphConv(
            in_dim, in_dim, norm="right", weight=False, bias=False, allow_zero_in_degree=True
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.lin_l.reset_parameters()
        self.lin_r.reset_parameters()

    def forward(self, x: torch.Tensor, g: dgl.DGLGraph) -> torch.Tensor:
        return self.lin_l(self.propagate(g, x)) + self.lin_r(x)
