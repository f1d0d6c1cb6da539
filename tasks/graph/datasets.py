"""Loaders of the graph data sets found in ``--data-dir`` (never downloaded).

Each loader returns a raw :class:`GraphData` (features and edges as stored);
:func:`tasks.graph.graph_data.prepare` normalises them afterwards. Files are
looked up in ``data_dir`` itself, in ``data_dir/<name>`` and in
``data_dir/graphs/<name>`` (with or without a ``raw/`` level), so both a folder
holding the file and the shared data root work.

=============  =====================================================  ==================
name           file                                                   split
=============  =====================================================  ==================
dgraphfin      ``dgraphfin.npz`` (x, y, edge_index (E, 2), masks)     official
reddit         ``reddit.npz`` (PyGOD: x, edge_index (2, E), y)        stratified 40/20/40
tolokers       ``tolokers.npz`` (heterophilous-graphs)                official (``split``)
minesweeper    ``minesweeper.npz`` (heterophilous-graphs)             official (``split``)
cora/citeseer  Planetoid raw ``ind.<name>.*``                         public split
yelpchi        ``YelpChi.mat`` (CARE-GNN)                             stratified 40/20/40
amazon         ``Amazon.mat`` (CARE-GNN; nodes < 3305 unlabelled)     stratified 40/20/40
=============  =====================================================  ==================
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dnrt_core.engine.data_checks import integral_ids, integral_labels
from dnrt_core.errors import DataError

from .graph_data import GraphData, stratified_split

#: the stratified split used where a data set ships none (CARE-GNN's 40/20/40)
DEFAULT_FRACTIONS = (0.4, 0.2, 0.4)
#: CARE-GNN's Amazon: the first 3305 users carry no reliable label
AMAZON_UNLABELLED = 3305


def _subfolders(folder: Path, parts: list[str]) -> list[Path]:
    """Folders under ``folder`` matching ``parts`` with case-insensitive names."""
    found = [folder]
    for part in parts:
        found = [
            c
            for f in found
            for c in sorted(f.iterdir())
            if c.is_dir() and c.name.lower() == part.lower()
        ]
    return found


def find_file(data_dir: str | Path | None, dataset: str, names: list[str]) -> Path:
    """The first ``<folder>/<name>`` (case-insensitive) over the candidate folders:
    ``data_dir[/graphs][/<dataset> | /Planetoid/<dataset>][/raw]``."""
    if data_dir is None:
        raise DataError(f"dataset {dataset!r} is read from files: pass --data-dir (data.data_dir)")
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DataError(f"data dir {root} does not exist")
    wanted = {n.lower() for n in names}
    for base in ([], ["graphs"]):
        for sub in ([], [dataset], ["planetoid", dataset]):
            for raw in ([], ["raw"]):
                for folder in _subfolders(root, base + sub + raw):
                    for entry in sorted(folder.iterdir()):
                        if entry.name.lower() in wanted and entry.is_file():
                            return entry
    raise DataError(f"dataset {dataset!r}: no {names[0]} in {root} (nor in {root}/{dataset}[/raw])")


def _load_npz(path: Path, required: tuple[str, ...]) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as exc:  # truncated / not an npz
        raise DataError(f"cannot read {path}: {exc}") from None
    missing = [k for k in required if k not in arrays]
    if missing:
        raise DataError(f"{path} misses key {missing[0]!r} (has: {', '.join(sorted(arrays))})")
    return arrays


def _edge_index(edges: np.ndarray, num_nodes: int, path: Path) -> torch.Tensor:
    """``(E, 2)`` or ``(2, E)`` integer array -> ``(2, E)`` int64, ids checked."""
    edges = np.asarray(edges)
    if edges.ndim != 2 or 2 not in edges.shape:
        raise DataError(f"{path}: edges must have shape (E, 2) or (2, E), got {edges.shape}")
    edges = edges.T if edges.shape[1] == 2 and edges.shape[0] != 2 else edges
    edges = integral_ids(edges, f"{path}: edges")
    if edges.size and (edges.min() < 0 or edges.max() >= num_nodes):
        raise DataError(
            f"{path}: edge ids must be in [0, {num_nodes}), got {edges.min()}..{edges.max()}"
        )
    return torch.from_numpy(np.ascontiguousarray(edges, dtype=np.int64))


def _index(mask: np.ndarray, num_nodes: int, key: str, path: Path) -> torch.Tensor:
    """An index array, or a boolean mask of length N, -> sorted int64 indices."""
    mask = np.asarray(mask)
    if mask.dtype == bool:
        if mask.shape != (num_nodes,):
            raise DataError(
                f"{path}: boolean {key} must have shape ({num_nodes},), got {mask.shape}"
            )
        mask = np.flatnonzero(mask)
    mask = integral_ids(mask.reshape(-1), f"{path}: {key}")
    if mask.size and (mask.min() < 0 or mask.max() >= num_nodes):
        raise DataError(f"{path}: {key} holds node ids outside [0, {num_nodes})")
    return torch.from_numpy(np.sort(mask))


def _features(x: Any, path: Path) -> torch.Tensor:
    if hasattr(x, "toarray"):  # scipy sparse
        x = x.toarray()
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise DataError(f"{path}: features must be 2-D (N, F), got shape {x.shape}")
    return torch.from_numpy(x)


def _labels(y: np.ndarray, num_nodes: int, path: Path) -> torch.Tensor:
    y = np.asarray(y).reshape(-1)
    if y.shape[0] != num_nodes:
        raise DataError(f"{path}: {y.shape[0]} labels for {num_nodes} nodes")
    return torch.from_numpy(integral_labels(y, f"{path}: labels"))


def _split_targets(
    name: str,
    x,
    y,
    edge_index,
    num_classes: int,
    candidates: np.ndarray,
    seed: int,
    feature_norm: str,
    info: dict,
) -> GraphData:
    train, val, test = stratified_split(y.numpy(), candidates, DEFAULT_FRACTIONS, seed)
    return GraphData(
        name,
        x,
        y,
        edge_index,
        torch.from_numpy(train),
        torch.from_numpy(val),
        torch.from_numpy(test),
        num_classes,
        feature_norm,
        info,
    )


# --------------------------------------------------------------------------- loaders


def load_dgraphfin(data_dir: str | Path | None, opts: dict[str, Any]) -> GraphData:
    """DGraphFin: x (N, 17), y in {0, 1, 2, 3}, edge_index (E, 2), index-array masks."""
    path = find_file(data_dir, "dgraphfin", ["dgraphfin.npz"])
    z = _load_npz(path, ("x", "y", "edge_index", "train_mask", "valid_mask", "test_mask"))
    x = _features(z["x"], path)
    n = x.shape[0]
    y = _labels(z["y"], n, path)
    splits = [_index(z[k], n, k, path) for k in ("train_mask", "valid_mask", "test_mask")]
    for key, idx in zip(("train_mask", "valid_mask", "test_mask"), splits, strict=True):
        bad = idx[(y[idx] < 0) | (y[idx] > 1)]
        if bad.numel():
            raise DataError(
                f"{path}: {key} holds node {int(bad[0])} with label {int(y[bad[0]])}"
                " (only 0 normal / 1 fraud are targets)"
            )
    info = {"background_nodes": int(((y == 2) | (y == 3)).sum())}
    return GraphData(
        "dgraphfin",
        x,
        y,
        _edge_index(z["edge_index"], n, path),
        *splits,
        num_classes=2,
        feature_norm="standardize",
        info=info,
    )


def load_reddit(data_dir: str | Path | None, opts: dict[str, Any]) -> GraphData:
    """PyGOD Reddit: x (N, 64), edge_index (2, E), y 0/1; stratified 40/20/40."""
    path = find_file(data_dir, "reddit", ["reddit.npz"])
    z = _load_npz(path, ("x", "edge_index", "y"))
    x = _features(z["x"], path)
    n = x.shape[0]
    y = _labels(z["y"], n, path)
    return _split_targets(
        "reddit",
        x,
        y,
        _edge_index(z["edge_index"], n, path),
        2,
        np.arange(n),
        int(opts["data_seed"]),
        "standardize",
        {},
    )


def _load_heterophilous(name: str, data_dir: str | Path | None, opts: dict[str, Any]) -> GraphData:
    """heterophilous-graphs npz: node_features, node_labels, edges (E, 2), (10, N) masks."""
    path = find_file(data_dir, name, [f"{name}.npz"])
    keys = ("node_features", "node_labels", "edges", "train_masks", "val_masks", "test_masks")
    z = _load_npz(path, keys)
    x = _features(z["node_features"], path)
    n = x.shape[0]
    y = _labels(z["node_labels"], n, path)
    split = int(opts["split"])
    num_splits = z["train_masks"].shape[0]
    if not 0 <= split < num_splits:
        raise DataError(
            f"{name} has {num_splits} official splits: data.split must be in "
            f"[0, {num_splits}), got {split}"
        )
    splits = [_index(z[k][split], n, k, path) for k in ("train_masks", "val_masks", "test_masks")]
    num_classes = int(y.max()) + 1
    return GraphData(
        name,
        x,
        y,
        _edge_index(z["edges"], n, path),
        *splits,
        num_classes=num_classes,
        feature_norm="standardize",
        info={"split": split},
    )


def load_tolokers(data_dir: str | Path | None, opts: dict[str, Any]) -> GraphData:
    return _load_heterophilous("tolokers", data_dir, opts)


def load_minesweeper(data_dir: str | Path | None, opts: dict[str, Any]) -> GraphData:
    return _load_heterophilous("minesweeper", data_dir, opts)


def _load_planetoid(name: str, data_dir: str | Path | None, opts: dict[str, Any]) -> GraphData:
    """Planetoid raw files, parsed in place by PyG (nothing written), public split."""
    from torch_geometric.io import read_planetoid_data

    path = find_file(data_dir, name, [f"ind.{name}.x"])
    missing = [
        s
        for s in ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")
        if not (path.parent / f"ind.{name}.{s}").is_file()
    ]
    if missing:
        raise DataError(f"{path.parent} misses Planetoid file ind.{name}.{missing[0]}")
    try:
        data = read_planetoid_data(str(path.parent), name)
    except Exception as exc:
        raise DataError(f"cannot read Planetoid {name} from {path.parent}: {exc}") from None
    idx = [m.nonzero().view(-1) for m in (data.train_mask, data.val_mask, data.test_mask)]
    return GraphData(
        name,
        data.x,
        data.y.long(),
        data.edge_index,
        *idx,
        num_classes=int(data.y.max()) + 1,
        feature_norm="row",
    )


def load_cora(data_dir: str | Path | None, opts: dict[str, Any]) -> GraphData:
    return _load_planetoid("cora", data_dir, opts)


def load_citeseer(data_dir: str | Path | None, opts: dict[str, Any]) -> GraphData:
    return _load_planetoid("citeseer", data_dir, opts)


def _load_caregnn(
    name: str, file: str, data_dir: str | Path | None, opts: dict[str, Any]
) -> GraphData:
    """CARE-GNN .mat: ``features`` (N, F), ``label`` (1, N), ``homo`` / ``net_*`` (N, N) sparse."""
    from scipy.io import loadmat

    path = find_file(data_dir, name, [file])
    try:
        mat = loadmat(str(path))
    except Exception as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    relations = sorted(k for k in mat if k == "homo" or k.startswith("net_"))
    for key in ("features", "label"):
        if key not in mat:
            raise DataError(f"{path} misses key {key!r}")
    relation = str(opts.get("relation") or "homo")
    if relation not in mat:
        raise DataError(
            f"{path} misses relation {relation!r} (has: {', '.join(relations) or 'none'})"
        )
    x = _features(mat["features"], path)
    n = x.shape[0]
    y = _labels(mat["label"], n, path)
    adj = mat[relation].tocoo() if hasattr(mat[relation], "tocoo") else None
    if adj is None or adj.shape != (n, n):
        raise DataError(f"{path}: {relation!r} must be a sparse ({n}, {n}) adjacency matrix")
    edge_index = _edge_index(np.stack([adj.row, adj.col]).astype(np.int64), n, path)
    first = AMAZON_UNLABELLED if name == "amazon" else 0
    if first >= n:
        raise DataError(f"{path}: amazon needs more than {first} nodes, got {n}")
    y[:first] = -1  # in the graph, never a target
    candidates = np.arange(first, n)
    return _split_targets(
        name,
        x,
        y,
        edge_index,
        2,
        candidates,
        int(opts["data_seed"]),
        "standardize",
        {"relation": relation},
    )


def load_yelpchi(data_dir: str | Path | None, opts: dict[str, Any]) -> GraphData:
    return _load_caregnn("yelpchi", "YelpChi.mat", data_dir, opts)


def load_amazon(data_dir: str | Path | None, opts: dict[str, Any]) -> GraphData:
    return _load_caregnn("amazon", "Amazon.mat", data_dir, opts)


def load_synthetic(data_dir: str | Path | None, opts: dict[str, Any]) -> GraphData:
    from .synthetic import make_fraud_graph

    return make_fraud_graph(
        int(opts["num_nodes"]),
        avg_degree=float(opts["avg_degree"]),
        fraud_rate=float(opts["fraud_rate"]),
        background_rate=float(opts["background_rate"]),
        homophily=float(opts["homophily"]),
        num_features=int(opts["num_features"]),
        feature_signal=float(opts["feature_signal"]),
        seed=int(opts["data_seed"]),
    )


LOADERS: dict[str, Callable[[str | Path | None, dict[str, Any]], GraphData]] = {
    "synthetic": load_synthetic,
    "dgraphfin": load_dgraphfin,
    "reddit": load_reddit,
    "tolokers": load_tolokers,
    "minesweeper": load_minesweeper,
    "cora": load_cora,
    "citeseer": load_citeseer,
    "yelpchi": load_yelpchi,
    "amazon": load_amazon,
}


def load_graph(dataset: str, data_dir: str | Path | None, opts: dict[str, Any]) -> GraphData:
    """Load ``dataset`` (a key of :data:`LOADERS`); ``opts`` is the ``data`` config section."""
    from dnrt_core.errors import unknown_name_error

    if dataset not in LOADERS:
        raise unknown_name_error("graph dataset", dataset, list(LOADERS))
    return LOADERS[dataset](data_dir, opts)
