"""A seeded synthetic fraud graph that mimics DGraphFin (vectorised numpy, ~1 s per million nodes).

* A share ``background_rate`` of the nodes are background nodes (labels 2 and 3):
  in the graph, never targets. The rest are labelled; a share ``fraud_rate`` of them
  is fraud (1), the others normal (0).
* Features ``(N, num_features)``: standard normal noise plus a class centre of norm
  ``feature_signal`` (normal nodes: centre 0).
* ``num_nodes · avg_degree`` directed edges from uniformly drawn sources; with
  probability ``homophily`` the destination is drawn from the source's class,
  otherwise uniformly (self-loops dropped).
* Labelled nodes are split 70 / 15 / 15 (DGraphFin's ratio), seeded.
"""

from __future__ import annotations

import numpy as np
import torch

from .graph_data import GraphData

NORMAL, FRAUD = 0, 1
BACKGROUND = (2, 3)


def make_fraud_graph(
    num_nodes: int = 100_000,
    *,
    avg_degree: float = 4.0,
    fraud_rate: float = 0.015,
    background_rate: float = 0.6,
    homophily: float = 0.3,
    num_features: int = 17,
    feature_signal: float = 1.0,
    seed: int = 0,
) -> GraphData:
    """Generate the graph (binary task: fraud vs normal; see the module docstring)."""
    if num_nodes < 10:
        raise ValueError(f"synthetic graph needs num_nodes >= 10, got {num_nodes}")
    for key, value in (
        ("fraud_rate", fraud_rate),
        ("background_rate", background_rate),
        ("homophily", homophily),
    ):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"synthetic {key} must be in [0, 1], got {value}")
    if background_rate >= 1.0:
        raise ValueError("synthetic background_rate must be < 1 (no labelled node otherwise)")
    rng = np.random.default_rng(seed)
    n = int(num_nodes)

    labelled = rng.random(n) >= background_rate
    fraud = rng.random(n) < fraud_rate
    background = np.where(rng.random(n) < 0.5, BACKGROUND[0], BACKGROUND[1])
    y = np.where(labelled, fraud.astype(np.int64), background).astype(np.int64)

    centres = rng.standard_normal((4, num_features))
    centres *= feature_signal / np.linalg.norm(centres, axis=1, keepdims=True)
    centres[NORMAL] = 0.0
    x = rng.standard_normal((n, num_features), dtype=np.float32)
    x += centres[y].astype(np.float32)

    num_edges = int(round(n * avg_degree))
    src = rng.integers(0, n, num_edges)
    order = np.argsort(y, kind="stable")
    counts = np.bincount(y, minlength=4)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    cls = y[src]
    same_class = order[starts[cls] + (rng.random(num_edges) * counts[cls]).astype(np.int64)]
    uniform = rng.integers(0, n, num_edges)
    dst = np.where(rng.random(num_edges) < homophily, same_class, uniform)
    keep = src != dst
    edge_index = np.stack([src[keep], dst[keep]])

    nodes = rng.permutation(np.flatnonzero(labelled))
    n_train, n_val = int(0.7 * len(nodes)), int(0.15 * len(nodes))
    splits = np.split(nodes, [n_train, n_train + n_val])
    train, val, test = (torch.from_numpy(np.sort(s)) for s in splits)
    return GraphData(
        name="synthetic",
        x=torch.from_numpy(x),
        y=torch.from_numpy(y),
        edge_index=torch.from_numpy(edge_index),
        train_idx=train,
        val_idx=val,
        test_idx=test,
        num_classes=2,
        feature_norm="standardize",
        info={
            "homophily": homophily,
            "fraud_rate": fraud_rate,
            "background_rate": background_rate,
        },
    )
