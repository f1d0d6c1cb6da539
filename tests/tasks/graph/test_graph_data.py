"""Graph task data: synthetic fraud graph, file loaders (small generated files, real graphs)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp
import torch

from tasks.common.vision import DataError
from tasks.graph.datasets import AMAZON_UNLABELLED, load_graph
from tasks.graph.graph_data import (
    check_split_ratios,
    coalesce_edges,
    prepare,
    ratio_split,
    resplit,
    set_self_loops,
    stratified_split,
)
from tasks.graph.synthetic import make_fraud_graph

OPTS = {"data_seed": 0, "split": 0, "relation": "homo"}


# --------------------------------------------------------------------------- synthetic


def test_synthetic_fraud_graph_mimics_dgraphfin():
    g = make_fraud_graph(40_000, fraud_rate=0.015, background_rate=0.6, seed=3)
    y = g.y.numpy()
    assert set(np.unique(y)) == {0, 1, 2, 3}
    assert g.num_classes == 2 and g.x.shape == (40_000, 17) and g.x.dtype == torch.float32
    background = np.isin(y, (2, 3))
    assert 0.58 < background.mean() < 0.62
    labelled = ~background
    assert 0.01 < (y[labelled] == 1).mean() < 0.02  # ~1.5 % fraud among labelled nodes
    splits = [g.train_idx, g.val_idx, g.test_idx]
    allidx = torch.cat(splits)
    assert allidx.unique().numel() == allidx.numel() == labelled.sum()  # disjoint, labelled only
    assert [round(s.numel() / labelled.sum(), 2) for s in splits] == [0.7, 0.15, 0.15]
    assert bool(((g.y[allidx] == 0) | (g.y[allidx] == 1)).all())
    assert g.num_edges > 3.9 * 40_000 and bool((g.edge_index[0] != g.edge_index[1]).all())


def test_synthetic_is_seeded():
    a, b, c = (make_fraud_graph(5000, seed=s) for s in (1, 1, 2))
    for key in ("x", "y", "edge_index", "train_idx", "test_idx"):
        assert torch.equal(getattr(a, key), getattr(b, key))
    assert not torch.equal(a.y, c.y)


def test_synthetic_homophily_knob():
    def same_class_share(h: float) -> float:
        g = make_fraud_graph(20_000, homophily=h, seed=0)
        src, dst = g.edge_index
        return float((g.y[src] == g.y[dst]).float().mean())

    low, high = same_class_share(0.0), same_class_share(0.9)
    assert high > low + 0.5


def test_synthetic_rejects_bad_values():
    with pytest.raises(ValueError, match="fraud_rate"):
        make_fraud_graph(100, fraud_rate=1.5)
    with pytest.raises(ValueError, match="num_nodes"):
        make_fraud_graph(3)


def test_prepare_symmetrises_and_standardises():
    g = make_fraud_graph(3000, seed=0)
    p = prepare(g, to_undirected=True, feature_norm="auto")
    key = set(map(tuple, p.edge_index.t().tolist()))
    assert all((d, s) in key for s, d in key) and len(key) == p.num_edges  # symmetric, no dups
    assert p.x.mean(0).abs().max() < 1e-4 and (p.x.std(0) - 1).abs().max() < 1e-3
    d = prepare(g, to_undirected=False, feature_norm="none")
    assert torch.equal(d.x, g.x) and d.num_edges <= g.num_edges


def test_coalesce_edges_sorted_unique():
    ei = torch.tensor([[2, 0, 2, 1], [1, 1, 1, 0]])
    assert coalesce_edges(ei, 3, undirected=False).tolist() == [[0, 1, 2], [1, 0, 1]]
    assert coalesce_edges(ei, 3, undirected=True).tolist() == [[0, 1, 1, 2], [1, 0, 2, 1]]


def test_stratified_split_fractions_and_strata():
    labels = np.array([0] * 900 + [1] * 100)
    train, val, test = stratified_split(labels, np.arange(1000), (0.4, 0.2, 0.4), seed=0)
    assert (len(train), len(val), len(test)) == (400, 200, 400)
    assert len(np.intersect1d(train, test)) == 0
    assert [int(labels[s].sum()) for s in (train, val, test)] == [40, 20, 40]
    again = stratified_split(labels, np.arange(1000), (0.4, 0.2, 0.4), seed=0)
    assert all(np.array_equal(a, b) for a, b in zip((train, val, test), again, strict=True))


# --------------------------------------------------------------------------- DGraphFin npz


def write_dgraphfin(path, n: int = 400, drop: str | None = None, seed: int = 0) -> dict:
    """A small dgraphfin.npz with the real file's keys, dtypes and index-array masks."""
    rng = np.random.default_rng(seed)
    y = rng.choice([0, 1, 2, 3], size=n, p=[0.35, 0.05, 0.3, 0.3]).astype(np.int64)
    y[:4] = [0, 1, 0, 1]
    labelled = rng.permutation(np.flatnonzero(y < 2))
    k = len(labelled)
    arrays = {
        "x": rng.standard_normal((n, 17)).astype(np.float32) * 3 + 1,
        "y": y,
        "edge_index": rng.integers(0, n, size=(3 * n, 2)).astype(np.int64),
        "edge_type": rng.integers(1, 12, size=3 * n).astype(np.int64),
        "edge_timestamp": rng.integers(1, 822, size=3 * n).astype(np.int64),
        "train_mask": np.sort(labelled[: int(0.7 * k)]).astype(np.int64),
        "valid_mask": np.sort(labelled[int(0.7 * k) : int(0.85 * k)]).astype(np.int64),
        "test_mask": np.sort(labelled[int(0.85 * k) :]).astype(np.int64),
    }
    if drop:
        arrays.pop(drop)
    np.savez(path / "dgraphfin.npz", **arrays)
    return arrays


def test_ratio_split_carves_as_gadbench():
    labels = (np.arange(1000) % 5 == 0).astype(np.int64)  # 20 % positive
    candidates = np.arange(1000)
    train, val, test = ratio_split(labels, candidates, (0.4, 0.2, 0.4), seed=3407)
    assert (len(train), len(val), len(test)) == (400, 200, 400)  # val = int(n · 0.2) nodes
    assert np.array_equal(np.sort(np.concatenate([train, val, test])), candidates)
    assert [int(labels[s].sum()) for s in (train, val, test)] == [80, 40, 80]  # stratified
    again = ratio_split(labels, candidates, (0.4, 0.2), seed=3407)  # test share implied
    assert all(np.array_equal(a, b) for a, b in zip((train, val, test), again, strict=True))
    other = ratio_split(labels, candidates, (0.4, 0.2), seed=3417)
    assert not np.array_equal(train, other[0])


@pytest.mark.parametrize("bad", [[0.5], [0.5, 0.5], [0.5, 0.25, 0.5], [0, 0.2], "0.5,0.25"])
def test_split_ratios_rejected(bad):
    with pytest.raises(ValueError, match="data.split_ratios"):
        check_split_ratios(bad)


def test_resplit_covers_the_target_nodes_only():
    g = make_fraud_graph(3000, background_rate=0.5, fraud_rate=0.1, seed=0)
    r = resplit(g, [0.5, 0.25, 0.25], 7)
    targets = g.is_target().nonzero().view(-1)
    allidx = torch.cat([r.train_idx, r.val_idx, r.test_idx]).sort().values
    assert torch.equal(allidx, targets)  # background nodes never enter a split
    assert len(r.train_idx) == int(0.5 * len(targets))  # scikit-learn floors the train share
    assert r.info["split_ratios"] == [0.5, 0.25, 0.25] and r.info["split_seed"] == 7


def test_self_loops_keep_add_remove():
    ei = torch.tensor([[0, 1, 1, 2, 2], [1, 0, 1, 2, 2]])  # node 1 once, node 2 twice
    assert torch.equal(set_self_loops(ei, 4, "keep"), ei)
    removed = set_self_loops(ei, 4, "remove")
    assert bool((removed[0] != removed[1]).all()) and removed.shape[1] == 2
    added = coalesce_edges(set_self_loops(ei, 4, "add"), 4, undirected=False)
    loops = added[:, added[0] == added[1]]
    assert loops[0].tolist() == [0, 1, 2, 3]  # exactly one per node, isolated node 3 too
    with pytest.raises(ValueError, match="self_loops"):
        set_self_loops(ei, 4, "twice")


def test_dgraphfin_loader(tmp_path):
    arrays = write_dgraphfin(tmp_path)
    g = load_graph("dgraphfin", tmp_path, OPTS)
    assert g.num_classes == 2 and g.x.shape == (400, 17)
    assert g.edge_index.shape == (2, 1200)  # (E, 2) in the file
    assert torch.equal(g.train_idx, torch.from_numpy(arrays["train_mask"]))
    assert g.info["background_nodes"] == int(np.isin(arrays["y"], (2, 3)).sum())
    assert not bool(g.is_target()[g.y >= 2].any())
    p = prepare(g, to_undirected=True, feature_norm="auto")
    assert p.feature_norm == "standardize" and p.x.mean(0).abs().max() < 1e-4
    targets = p.train_targets()
    assert int((targets >= 0).sum()) == len(arrays["train_mask"])


def test_dgraphfin_found_in_subfolder(tmp_path):
    (tmp_path / "dgraphfin").mkdir()
    write_dgraphfin(tmp_path / "dgraphfin")
    assert load_graph("dgraphfin", tmp_path, OPTS).num_nodes == 400


@pytest.mark.parametrize("key", ["valid_mask", "x", "edge_index"])
def test_dgraphfin_missing_key(tmp_path, key):
    write_dgraphfin(tmp_path, drop=key)
    with pytest.raises(DataError, match=f"misses key '{key}'"):
        load_graph("dgraphfin", tmp_path, OPTS)


def test_dgraphfin_missing_file_and_dir(tmp_path):
    with pytest.raises(DataError, match="no dgraphfin.npz"):
        load_graph("dgraphfin", tmp_path, OPTS)
    with pytest.raises(DataError, match="--data-dir"):
        load_graph("dgraphfin", None, OPTS)
    with pytest.raises(DataError, match="does not exist"):
        load_graph("dgraphfin", tmp_path / "nope", OPTS)


def test_dgraphfin_malformed(tmp_path):
    arrays = write_dgraphfin(tmp_path)
    arrays["train_mask"] = np.append(arrays["train_mask"], np.flatnonzero(arrays["y"] == 2)[0])
    np.savez(tmp_path / "dgraphfin.npz", **arrays)
    with pytest.raises(DataError, match="only 0 normal / 1 fraud"):
        load_graph("dgraphfin", tmp_path, OPTS)
    arrays = write_dgraphfin(tmp_path)
    arrays["edge_index"][0, 0] = 10_000
    np.savez(tmp_path / "dgraphfin.npz", **arrays)
    with pytest.raises(DataError, match="edge ids"):
        load_graph("dgraphfin", tmp_path, OPTS)
    (tmp_path / "dgraphfin.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="cannot read"):
        load_graph("dgraphfin", tmp_path, OPTS)


# --------------------------------------------------------------------------- CARE-GNN .mat


def write_caregnn(path, file: str, relations: list[str], n: int, drop: str | None = None):
    """A small CARE-GNN .mat: sparse relations, sparse features, label (1, N)."""
    rng = np.random.default_rng(0)
    mat = {}
    for rel in ["homo", *relations]:
        rows, cols = rng.integers(0, n, 4 * n), rng.integers(0, n, 4 * n)
        mat[rel] = sp.csc_matrix((np.ones(4 * n), (rows, cols)), shape=(n, n))
    mat["features"] = sp.csc_matrix(rng.random((n, 32)) * (rng.random((n, 32)) < 0.3))
    label = (rng.random(n) < 0.15).astype(np.int64)
    label[:2] = [0, 1]
    mat["label"] = label[None, :]
    if drop:
        mat.pop(drop)
    scipy.io.savemat(path / file, mat)
    return mat


def test_yelpchi_loader(tmp_path):
    mat = write_caregnn(tmp_path, "YelpChi.mat", ["net_rur", "net_rtr", "net_rsr"], 500)
    g = load_graph("yelpchi", tmp_path, OPTS)
    assert g.num_classes == 2 and g.x.shape == (500, 32)
    assert g.num_edges == mat["homo"].nnz
    sizes = [len(s) for s in (g.train_idx, g.val_idx, g.test_idx)]
    assert sizes == [200, 100, 200]  # CARE-GNN's 40/20/40, stratified
    rur = load_graph("yelpchi", tmp_path, {**OPTS, "relation": "net_rur"})
    assert rur.num_edges == mat["net_rur"].nnz and rur.info["relation"] == "net_rur"
    with pytest.raises(DataError, match="misses relation 'net_upu'.*net_rsr"):
        load_graph("yelpchi", tmp_path, {**OPTS, "relation": "net_upu"})


def test_caregnn_missing_key(tmp_path):
    write_caregnn(tmp_path, "YelpChi.mat", ["net_rur"], 100, drop="label")
    with pytest.raises(DataError, match="misses key 'label'"):
        load_graph("yelpchi", tmp_path, OPTS)


def test_amazon_skips_unlabelled_prefix(tmp_path):
    n = AMAZON_UNLABELLED + 300
    write_caregnn(tmp_path, "Amazon.mat", ["net_upu", "net_usu", "net_uvu"], n)
    g = load_graph("amazon", tmp_path, OPTS)
    allidx = torch.cat([g.train_idx, g.val_idx, g.test_idx])
    assert int(allidx.min()) >= AMAZON_UNLABELLED and allidx.numel() == 300
    assert bool((g.y[:AMAZON_UNLABELLED] == -1).all()) and g.num_nodes == n


def test_unknown_dataset_suggests():
    with pytest.raises(ValueError, match="did you mean 'tolokers'"):
        load_graph("tolokerz", None, OPTS)


# --------------------------------------------------------------------------- real graphs


def test_real_reddit(real_data):
    g = load_graph("reddit", real_data / "graphs", OPTS)
    assert (g.num_nodes, g.num_edges, g.x.shape[1]) == (10_984, 168_016, 64)
    assert int((g.y == 1).sum()) == 366
    sizes = [len(s) for s in (g.train_idx, g.val_idx, g.test_idx)]
    assert sum(sizes) == 10_984 and abs(sizes[0] - 0.4 * 10_984) <= 1
    positives = [int(g.y[s].sum()) for s in (g.train_idx, g.val_idx, g.test_idx)]
    assert max(abs(p / s - 366 / 10_984) for p, s in zip(positives, sizes, strict=True)) < 0.003


def test_real_tolokers_official_splits(real_data):
    g = load_graph("tolokers", real_data, OPTS)  # found under data/graphs/tolokers/raw
    assert g.num_nodes == 11_758 and g.num_classes == 2
    assert [len(s) for s in (g.train_idx, g.val_idx, g.test_idx)] == [5879, 2939, 2940]
    other = load_graph("tolokers", real_data, {**OPTS, "split": 3})
    assert not torch.equal(g.train_idx, other.train_idx)
    assert prepare(g, to_undirected=True, feature_norm="auto").num_edges == 1_038_000
    with pytest.raises(DataError, match=r"\[0, 10\)"):
        load_graph("tolokers", real_data, {**OPTS, "split": 10})


def test_real_tolokers_gadbench_split(real_data):
    """GADBench's Tolokers split of trial 0 (50/25/25, seed 3407): sizes and the first node ids
    its own preprocessing code (preprocess.ipynb ``Dataset.split``) gives on this file."""
    g = load_graph("tolokers", real_data / "graphs", OPTS)
    r = resplit(g, [0.5, 0.25, 0.25], 3407)
    assert (len(r.train_idx), len(r.val_idx), len(r.test_idx)) == (5879, 2939, 2940)
    assert r.val_idx[:6].tolist() == [3, 23, 28, 30, 43, 45]
    assert r.test_idx[:6].tolist() == [10, 11, 13, 16, 24, 25]


@pytest.mark.parametrize(
    ("name", "nodes", "classes", "features"),
    [("cora", 2708, 7, 1433), ("citeseer", 3327, 6, 3703)],
)
def test_real_planetoid_public_split(real_data, name, nodes, classes, features):
    g = load_graph(name, real_data / "graphs", OPTS)  # read-only folder: nothing is written
    assert (g.num_nodes, g.num_classes, g.x.shape[1]) == (nodes, classes, features)
    assert [len(s) for s in (g.train_idx, g.val_idx, g.test_idx)] == [20 * classes, 500, 1000]
    p = prepare(g, to_undirected=True, feature_norm="auto")
    assert p.feature_norm == "row"
    assert torch.allclose(p.x.sum(1)[p.x.sum(1) > 0], torch.ones(1))


def test_real_minesweeper(real_data):
    g = load_graph("minesweeper", real_data / "graphs", OPTS)
    assert g.num_nodes == 10_000 and int(g.y.sum()) == 2000
