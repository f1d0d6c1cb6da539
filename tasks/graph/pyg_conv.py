"""PyG's ``GCNConv`` and ``SAGEConv`` with a faster sparse product for full graphs on CPU.

Both run PyG's fused path on a ``torch.sparse_csr`` transposed adjacency ``adj_t``
(row = target node). ``torch.sparse.mm``'s backward re-sorts the matrix on every
call (2-3x the forward); here the transpose is built once, kept on the adjacency
object, and the backward is one more sparse product. Parameters, initialisation
and results are those of the PyG layers.

(No ``from __future__ import annotations`` here: PyG generates ``propagate`` from the
evaluated type hints; and PyG caches class sources by class *name*, so these subclasses
must not be called ``GCNConv`` / ``SAGEConv``.)
"""

import torch
import torch_geometric.nn as pyg_nn
from torch import Tensor
from torch_geometric.typing import Adj, OptPairTensor

from .backends import SAGE_AGGRS

_TRANSPOSE = "_dnrt_transpose"


def transpose_of(adj_t: torch.Tensor) -> torch.Tensor:
    """``adj_t.T`` as CSR, computed once per adjacency object."""
    adj = getattr(adj_t, _TRANSPOSE, None)
    if adj is None:
        adj = adj_t.t().to_sparse_csr()
        setattr(adj_t, _TRANSPOSE, adj)
    return adj


class _SparseMM(torch.autograd.Function):
    """``adj_t @ x`` with the gradient ``adj_t.T @ grad`` from the cached transpose."""

    @staticmethod
    def forward(ctx, adj_t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.adj_t = adj_t
        return torch.sparse.mm(adj_t, x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return None, torch.sparse.mm(transpose_of(ctx.adj_t), grad.contiguous())


def sparse_matmul(adj_t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``(N, N)`` sparse CSR times ``(N, d)`` dense -> ``(N, d)``."""
    if x.requires_grad and adj_t.layout == torch.sparse_csr:
        return _SparseMM.apply(adj_t, x)
    return torch.sparse.mm(adj_t, x)


class SparseGCNConv(pyg_nn.GCNConv):
    """``torch_geometric.nn.GCNConv(normalize=False)``: the graph is the GCN-normalised
    ``adj_t`` (PyG's ``GCNNorm`` pattern). ``(N, in_dim)`` -> ``(N, out_dim)``."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__(in_dim, out_dim, normalize=False)

    def message_and_aggregate(self, adj_t: Adj, x: Tensor) -> Tensor:
        if isinstance(adj_t, torch.Tensor) and adj_t.layout == torch.sparse_csr:
            return sparse_matmul(adj_t, x)
        return super().message_and_aggregate(adj_t, x)


class SparseSAGEConv(pyg_nn.SAGEConv):
    """``torch_geometric.nn.SAGEConv`` with ``aggr`` mean, max or pool on a binary ``adj_t``.

    ``pool`` is Hamilton et al.'s max-pooling: a linear layer and ReLU on every neighbour,
    then the element-wise max (PyG's ``project=True``). ``(N, in_dim)`` -> ``(N, out_dim)``.
    """

    def __init__(self, in_dim: int, out_dim: int, aggr: str = "mean"):
        if aggr not in SAGE_AGGRS:
            raise ValueError(f"unknown SAGE aggregator {aggr!r}; valid: {', '.join(SAGE_AGGRS)}")
        pool = aggr == "pool"
        super().__init__(in_dim, out_dim, aggr="max" if pool else aggr, project=pool)

    def message_and_aggregate(self, adj_t: Adj, x: OptPairTensor) -> Tensor:
        is_csr = isinstance(adj_t, torch.Tensor) and adj_t.layout == torch.sparse_csr
        if is_csr and self.aggr == "mean":
            degree = adj_t.crow_indices().diff().clamp(min=1).to(x[0].dtype)
            return sparse_matmul(adj_t, x[0]) / degree[:, None]
        return super().message_and_aggregate(adj_t, x)
