"""The in-memory node-classification graph every loader returns, and its preparation.

Labels follow DGraphFin's convention: classes ``0 .. K-1`` are prediction targets;
any other value (DGraphFin's background nodes 2 and 3, or -1 for unlabelled) marks a
node that is part of the graph but never a target.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from dnrt_core.engine.data_checks import check_classes, check_finite, check_labels, check_splits
from dnrt_core.errors import DataError

FEATURE_NORMS = ("auto", "standardize", "row", "none")
SELF_LOOPS = ("keep", "add", "remove")


@dataclass
class GraphData:
    """A node-classification graph.

    Attributes:
        name: data-set name.
        x: node features ``(N, F)`` float32.
        y: raw labels ``(N,)`` int64; ``0 .. num_classes-1`` are targets, other values never.
        edge_index: ``(2, E)`` int64, messages flow ``edge_index[0] -> edge_index[1]``.
        train_idx, val_idx, test_idx: node indices ``(n_split,)`` int64 (target nodes only).
        num_classes: K.
        feature_norm: the normalisation ``auto`` resolves to for this data set.
        info: extra facts for the run summary.
    """

    name: str
    x: torch.Tensor
    y: torch.Tensor
    edge_index: torch.Tensor
    train_idx: torch.Tensor
    val_idx: torch.Tensor
    test_idx: torch.Tensor
    num_classes: int
    feature_norm: str = "standardize"
    info: dict = field(default_factory=dict)

    @property
    def num_nodes(self) -> int:
        return int(self.x.shape[0])

    @property
    def num_edges(self) -> int:
        return int(self.edge_index.shape[1])

    def is_target(self) -> torch.Tensor:
        """``(N,)`` bool: nodes whose label is a class ``0 .. K-1``."""
        return (self.y >= 0) & (self.y < self.num_classes)

    def split(self, name: str) -> torch.Tensor:
        return {"train": self.train_idx, "val": self.val_idx, "test": self.test_idx}[name]

    def train_targets(self) -> torch.Tensor:
        """``(N,)`` int64: the label of training nodes, -1 for every other node."""
        targets = torch.full_like(self.y, -1)
        targets[self.train_idx] = self.y[self.train_idx]
        return targets

    def class_counts(self, split: str = "train") -> list[int]:
        labels = self.y[self.split(split)]
        return torch.bincount(labels, minlength=self.num_classes).tolist()


def check_graph(graph: GraphData, where: str) -> None:
    """Refuse a graph that cannot train or be scored: non-finite features, empty or
    overlapping splits, split nodes that are not targets, a training split with fewer than
    two classes, or (binary, scored by AUC) a val/test split without both classes."""
    check_finite(graph.x, f"{where}: node features")
    splits = {s: graph.split(s) for s in ("train", "val", "test")}
    check_splits(splits, where)
    k = graph.num_classes
    for name, idx in splits.items():
        check_labels(graph.y[idx], k, f"{where}: {name} split labels")
    train = graph.y[splits["train"]]
    if k == 2:
        for name in ("train", "val", "test"):
            why = "training needs both" if name == "train" else "ROC-AUC needs both classes"
            check_classes(graph.y[splits[name]], range(2), name, why, where)
    elif torch.unique(train).numel() < 2:
        raise DataError(f"{where}: the train split holds a single class ({int(train[0])})")


def stratified_split(
    labels: np.ndarray, candidates: np.ndarray, fractions: tuple[float, float, float], seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded stratified train/val/test split of the nodes ``candidates`` (scikit-learn).

    ``labels`` is ``(N,)``; returns three sorted index arrays.
    """
    from sklearn.model_selection import train_test_split

    train_f, val_f, test_f = fractions
    counts = np.bincount(labels[candidates])
    stratify = labels[candidates] if counts[counts > 0].min() >= 3 else None
    train, rest = train_test_split(
        candidates, train_size=train_f, random_state=seed, stratify=stratify
    )
    rest_stratify = labels[rest] if stratify is not None else None
    val, test = train_test_split(
        rest, test_size=test_f / (val_f + test_f), random_state=seed, stratify=rest_stratify
    )
    return np.sort(train), np.sort(val), np.sort(test)


def check_split_ratios(ratios: Any) -> None:
    """``[train, val]`` or ``[train, val, test]`` shares in (0, 1); test is the rest."""
    ok = isinstance(ratios, (list, tuple)) and len(ratios) in (2, 3)
    ok = ok and all(isinstance(r, (int, float)) and 0 < r < 1 for r in ratios)
    ok = ok and ratios[0] + ratios[1] < 1
    if ok and len(ratios) == 3:
        ok = abs(sum(ratios) - 1.0) < 1e-6
    if not ok:
        raise ValueError(
            "data.split_ratios must be [train, val] or [train, val, test] shares in (0, 1) "
            f"(test = the rest, so the three sum to 1), got {ratios!r}"
        )


def ratio_split(
    labels: np.ndarray, candidates: np.ndarray, ratios: Sequence[float], seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stratified random train/val/test split of ``candidates`` as GADBench carves it.

    ``train`` is a stratified ``ratios[0]`` share of the candidates (scikit-learn's
    ``train_test_split``, ``random_state=seed``); ``val`` is ``int(n · ratios[1])`` nodes
    drawn stratified from the rest with the same seed; ``test`` is what remains. The same
    labels, ratios and seed give GADBench's split exactly. Returns three sorted index arrays.
    """
    from sklearn.model_selection import train_test_split

    check_split_ratios(ratios)
    train_r, val_r = float(ratios[0]), float(ratios[1])
    candidates = np.asarray(candidates)
    train, rest = train_test_split(
        candidates, train_size=train_r, stratify=labels[candidates], random_state=seed
    )
    val, test = train_test_split(
        rest, train_size=int(len(candidates) * val_r), stratify=labels[rest], random_state=seed
    )
    return np.sort(train), np.sort(val), np.sort(test)


def resplit(graph: GraphData, ratios: Sequence[float], seed: int) -> GraphData:
    """``graph`` with its split replaced by :func:`ratio_split` over all target nodes."""
    candidates = graph.is_target().nonzero().view(-1).numpy()
    train, val, test = ratio_split(graph.y.numpy(), candidates, ratios, seed)
    info = {**graph.info, "split": "stratified", "split_ratios": list(ratios), "split_seed": seed}
    return replace(
        graph,
        train_idx=torch.from_numpy(train),
        val_idx=torch.from_numpy(val),
        test_idx=torch.from_numpy(test),
        info=info,
    )


def normalize_features(x: torch.Tensor, method: str) -> torch.Tensor:
    """``standardize``: zero mean / unit variance per feature; ``row``: rows sum to 1
    (PyG's ``NormalizeFeatures``); ``none``. ``x`` is ``(N, F)``."""
    if method == "standardize":
        mean = x.mean(dim=0, keepdim=True)
        std = x.std(dim=0, keepdim=True)
        return (x - mean) / torch.where(std > 1e-12, std, torch.ones_like(std))
    if method == "row":
        return x / x.sum(dim=1, keepdim=True).clamp(min=1e-12)
    if method == "none":
        return x
    raise ValueError(f"unknown feature_norm {method!r}; valid: {', '.join(FEATURE_NORMS)}")


def unique_sorted(key: np.ndarray) -> np.ndarray:
    """Sorted distinct values of an int64 array (np.unique is ~100x slower in numpy 2.x)."""
    key = np.sort(key)
    if key.size:
        keep = np.empty(key.size, dtype=bool)
        keep[0] = True
        np.not_equal(key[1:], key[:-1], out=keep[1:])
        key = key[keep]
    return key


def coalesce_edges(edge_index: torch.Tensor, num_nodes: int, *, undirected: bool) -> torch.Tensor:
    """Sorted (by source, then target), duplicate-free ``(2, E')`` edges; with ``undirected``
    every reverse edge is added (numpy sort: several times faster than PyG's ``to_undirected``)."""
    src, dst = edge_index.cpu().numpy().astype(np.int64, copy=False)
    if undirected:
        src, dst = np.concatenate([src, dst]), np.concatenate([dst, src])
    key = unique_sorted(src * num_nodes + dst)
    return torch.from_numpy(np.stack([key // num_nodes, key % num_nodes]))


def set_self_loops(edge_index: torch.Tensor, num_nodes: int, mode: str) -> torch.Tensor:
    """``keep`` the edges as they are, ``remove`` every self-loop, or ``add``: exactly one
    self-loop per node (GADBench's ``dgl.add_self_loop`` + ``dgl.to_simple``)."""
    if mode == "keep":
        return edge_index
    if mode not in SELF_LOOPS:
        raise ValueError(f"unknown self_loops {mode!r}; valid: {', '.join(SELF_LOOPS)}")
    edge_index = edge_index[:, edge_index[0] != edge_index[1]]
    if mode == "add":
        loops = torch.arange(num_nodes, dtype=edge_index.dtype).expand(2, -1)
        edge_index = torch.cat([edge_index, loops], dim=1)
    return edge_index


def prepare(
    graph: GraphData, *, to_undirected: bool, feature_norm: str, self_loops: str = "keep"
) -> GraphData:
    """Coalesced (optionally symmetrised) simple-graph edges, self-loops as ``self_loops``
    says (:func:`set_self_loops`), and normalised float32 features."""
    edge_index = set_self_loops(graph.edge_index, graph.num_nodes, self_loops)
    edge_index = coalesce_edges(edge_index, graph.num_nodes, undirected=to_undirected)
    method = graph.feature_norm if feature_norm == "auto" else feature_norm
    x = normalize_features(graph.x.float(), method)
    return replace(graph, x=x.contiguous(), edge_index=edge_index, feature_norm=method)
