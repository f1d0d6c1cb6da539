"""GCN and GraphSAGE for node classification, one definition for every backend.

Layout (what ``dnrt_core.tune`` sees)::

    hidden.0 .. hidden.{L-2}   GNNLayer: conv -> norm (BatchNorm1d | Identity) -> act
    head                       conv to the K classes (no activation)

With ``head="linear"`` (GADBench's GCN / GraphSAGE) all L convs are hidden layers
(``hidden.0 .. hidden.{L-1}``) and ``head`` is an ``nn.Linear`` to the K classes.

Each hidden layer owns its activation module (made by the ``act_layer`` factory),
so ``tune`` gives every layer its own RAA / DPA instance; ARR sites ``hidden.*``
(pool ``node``) see the post-activation node embeddings ``(N, hidden)``; DPA
sites are ``hidden.*.act``. Dropout is applied functionally *before* each conv
(as in Kipf & Welling), so the embeddings ARR memorises are not dropped out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .backends import Backend

#: ARR / DPA sites of :class:`GNN` (the hidden layers only, never the classifier); the ARR
#: sites are the ``gnn`` family's ``every_layer`` placement (``*_pre``: ``hidden.*.act:in``)
ARR_SITES = "hidden.*"
DPA_SITES = "hidden.*.act"
#: the classifier after the hidden layers: a graph conv (Kipf & Welling) or a linear layer
HEADS = ("conv", "linear")
#: weight initialisations: PyG's layers, or DGL's (differs for SAGE only, see dgl_sage_init_)
INITS = ("pyg", "dgl")


def dgl_sage_init_(conv: nn.Module) -> None:
    """Re-initialise a SAGE conv's weights as DGL's ``SAGEConv`` does: Xavier-uniform with the
    ReLU gain (PyG: Kaiming-uniform, a = sqrt(5), i.e. about 2.4x narrower for 10 inputs).
    Biases keep their (same in both libraries) default. GCN's inits already agree."""
    gain = nn.init.calculate_gain("relu")
    for name in ("lin", "lin_l", "lin_r"):
        lin = getattr(conv, name, None)
        if lin is not None:
            nn.init.xavier_uniform_(lin.weight, gain=gain)


class GNNLayer(nn.Module):
    """``act(norm(conv(x, graph)))``: ``(N, in_dim)`` -> ``(N, out_dim)``."""

    def __init__(self, conv: nn.Module, out_dim: int, act: nn.Module, batch_norm: bool = False):
        super().__init__()
        self.conv = conv
        self.norm = nn.BatchNorm1d(out_dim) if batch_norm else nn.Identity()
        self.act = act

    def forward(self, x: torch.Tensor, graph: Any) -> torch.Tensor:
        return self.act(self.norm(self.conv(x, graph)))


class GNN(nn.Module):
    """GCN / GraphSAGE: ``forward(x (N, F), graph) -> logits (N, num_classes)``.

    Args:
        backend: makes the convs (``gcn`` or ``sage``) and defines the graph object.
        model: ``gcn`` or ``sage``.
        in_dim, hidden, num_classes: F, the hidden width, K.
        num_layers: convs in total: ``num_layers - 1`` hidden layers + a conv head
            (``head="conv"``), or ``num_layers`` hidden layers + a linear head.
        dropout: dropout probability before each conv and the head.
        batch_norm: BatchNorm1d after each hidden conv.
        act_layer: factory of the hidden activations (``tune`` swaps them for the mechanism).
        head: ``conv`` (a graph conv to K) or ``linear`` (an ``nn.Linear`` to K).
        aggr: GraphSAGE's neighbour aggregator, ``mean``, ``max`` or ``pool``.
        init: ``pyg`` (the layers' own) or ``dgl`` (:func:`dgl_sage_init_` for SAGE convs).
    """

    def __init__(
        self,
        backend: Backend,
        model: str,
        in_dim: int,
        hidden: int,
        num_classes: int,
        num_layers: int = 2,
        dropout: float = 0.5,
        batch_norm: bool = False,
        act_layer: Callable[[], nn.Module] = nn.ReLU,
        head: str = "conv",
        aggr: str = "mean",
        init: str = "pyg",
    ):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"model.num_layers must be >= 1, got {num_layers}")
        if head not in HEADS:
            raise ValueError(f"unknown model.head {head!r}; valid: {', '.join(HEADS)}")
        if init not in INITS:
            raise ValueError(f"unknown model.init {init!r}; valid: {', '.join(INITS)}")
        self.model_name = model
        self.num_classes = num_classes
        self.dropout = float(dropout)
        depth = num_layers if head == "linear" else num_layers - 1
        dims = [in_dim] + [hidden] * depth
        self.hidden = nn.ModuleList(
            GNNLayer(backend.conv(model, d_in, hidden, aggr), hidden, act_layer(), batch_norm)
            for d_in in dims[:-1]
        )
        if head == "linear":
            self.head: nn.Module = nn.Linear(dims[-1], num_classes)
        else:
            self.head = backend.conv(model, dims[-1], num_classes, aggr)
        self.head_kind = head
        if init == "dgl" and model == "sage":
            for conv in [layer.conv for layer in self.hidden] + [self.head]:
                if not isinstance(conv, nn.Linear):
                    dgl_sage_init_(conv)

    def forward(self, x: torch.Tensor, graph: Any) -> torch.Tensor:
        for layer in self.hidden:
            x = F.dropout(x, p=self.dropout, training=self.training)
            x = layer(x, graph)
        x = F.dropout(x, p=self.dropout, training=self.training)
        return self.head(x) if self.head_kind == "linear" else self.head(x, graph)
