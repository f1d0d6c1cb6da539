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
#: weight initialisations: PyG's layers, or DGL's draws in DGL's order (see dgl_init_)
INITS = ("pyg", "dgl")


def dgl_init_(convs: list[nn.Module], head: nn.Module, model: str) -> None:
    """Redraw the weights with DGL's draws, in DGL's order, from the current RNG state.

    GADBench builds its GCN / GraphSAGE from DGL's ``GraphConv`` / ``SAGEConv`` and an
    ``nn.Linear`` head. Replaying their construction (the same tensors, shapes and init calls,
    layer by layer) on our parameters means that a seed gives GADBench's initial weights
    exactly. DGL's ``GraphConv`` draws Xavier-uniform on an ``(in, out)`` weight (stored here
    transposed); ``SAGEConv`` builds ``fc_pool`` (pool only), ``fc_neigh`` (no bias) and
    ``fc_self`` as ``nn.Linear`` layers, then redraws their weights Xavier-uniform with the
    ReLU gain (PyG: Kaiming-uniform, a = sqrt(5), about 2.4x narrower for 10 inputs). DGL's
    ``fc_self`` bias is our ``lin_l`` bias: both are added to the same sum.
    """
    gain = nn.init.calculate_gain("relu")
    with torch.no_grad():
        for conv in [*convs, head]:
            if isinstance(conv, nn.Linear):
                conv.reset_parameters()  # the same draws as constructing it
            elif model == "gcn":
                weight = nn.init.xavier_uniform_(torch.empty(conv.lin.weight.shape[::-1]))
                conv.lin.weight.copy_(weight.T)
                conv.bias.zero_()
            else:
                out, fan_in = conv.lin_r.weight.shape
                pool = nn.Linear(fan_in, fan_in) if hasattr(conv, "lin") else None
                neigh, root = nn.Linear(fan_in, out, bias=False), nn.Linear(fan_in, out)
                if pool is not None:
                    nn.init.xavier_uniform_(pool.weight, gain=gain)
                    conv.lin.weight.copy_(pool.weight)
                    conv.lin.bias.copy_(pool.bias)
                nn.init.xavier_uniform_(root.weight, gain=gain)
                nn.init.xavier_uniform_(neigh.weight, gain=gain)
                conv.lin_l.weight.copy_(neigh.weight)
                conv.lin_l.bias.copy_(root.bias)
                conv.lin_r.weight.copy_(root.weight)


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
        init: ``pyg`` (the layers' own) or ``dgl`` (:func:`dgl_init_`: DGL's draws, so a seed
            gives the initial weights of GADBench's DGL models).
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
        rng_state = torch.random.get_rng_state()  # init="dgl" redraws from here
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
        if init == "dgl":
            torch.random.set_rng_state(rng_state)
            dgl_init_([layer.conv for layer in self.hidden], self.head, model)

    def forward(self, x: torch.Tensor, graph: Any) -> torch.Tensor:
        for layer in self.hidden:
            x = F.dropout(x, p=self.dropout, training=self.training)
            x = layer(x, graph)
        x = F.dropout(x, p=self.dropout, training=self.training)
        return self.head(x) if self.head_kind == "linear" else self.head(x, graph)
