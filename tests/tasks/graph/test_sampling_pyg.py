"""PyG ``NeighborLoader`` mini-batches (backend pyg, sampler neighbor).

They need torch-sparse (or pyg-lib): the README's optional set-up step installs torch-scatter
and torch-sparse. Without them these tests skip with that reason, except in CI, where they fail.
"""

from __future__ import annotations

import os

import pytest
import torch

from dnrt_core.engine import build, resolve_config, run
from tasks.graph import GraphTask
from tasks.graph.backends import get_backend
from tasks.graph.sampling import PyGNeighborBatches, pyg_sampler_available

CPU = torch.device("cpu")
TINY = {
    "data.num_nodes": 1500,
    "data.background_rate": 0.3,
    "data.fraud_rate": 0.08,
    "model.hidden": 16,
    "data.sampler": "neighbor",
    "data.backend": "pyg",
    "data.batch_size": 256,
}


@pytest.fixture(autouse=True)
def pyg_sampler():
    if not pyg_sampler_available():
        reason = (
            "PyG NeighborLoader needs torch-sparse or pyg-lib "
            "(README: Optional: PyG neighbour sampling)"
        )
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must install them")
        pytest.skip(reason)


def _random_graph(n: int = 400, e: int = 4000, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    edge_index = torch.randint(0, n, (2, e), generator=g)
    edge_index = edge_index[:, edge_index[0] != edge_index[1]]
    return torch.unique(edge_index, dim=1)  # no duplicate edges: in-degrees count neighbours


def test_batches_put_seeds_first_and_sample_existing_edges():
    n, fanouts, size = 400, [3, 2], 50
    edge_index = _random_graph(n)
    x = torch.arange(n, dtype=torch.float32)[:, None]  # feature = global node id
    targets = torch.randint(0, 2, (n,), generator=torch.Generator().manual_seed(1))
    seeds = torch.arange(0, 300, 2)
    batches = PyGNeighborBatches(
        get_backend("pyg"), "sage", x, targets, edge_index, seeds, fanouts, size, seed=0
    )
    epoch = batches.epoch(0)
    assert len(epoch) == 3
    edges = set(map(tuple, edge_index.t().tolist()))
    seen = []
    for batch in epoch:
        ids = batch.x[:, 0].long()
        k = batch.num_seeds
        seen.append(ids[:k])
        assert bool(torch.isin(ids[:k], seeds).all())
        assert torch.equal(batch.targets[:k], targets[ids[:k]])
        assert bool((batch.targets[k:] == -1).all())
        assert len(ids.unique()) == len(ids)  # each node once
        dst, src = batch.graph.to_sparse_coo().coalesce().indices()  # row = target node
        assert {(int(a), int(b)) for a, b in zip(ids[src], ids[dst], strict=True)} <= edges
        in_deg = torch.bincount(dst, minlength=len(ids))
        assert int(in_deg[:k].max()) <= fanouts[0]
    assert torch.equal(torch.cat(seen).sort().values, seeds)  # every seed once per epoch
    assert len(ids) > k  # neighbours were sampled


def test_engine_trains_with_pyg_neighbor_sampler(tmp_path):
    overrides = {**TINY, "train.epochs": 2, "mech.act": "raa", "mech.arr": True}
    built = build(GraphTask(), resolve_config(GraphTask(), overrides), CPU)
    assert isinstance(built.data.train, PyGNeighborBatches)
    summary = run(GraphTask(), overrides, tmp_path / "run", quiet=True)
    assert summary["sampler"] == "neighbor" and summary["backend"] == "pyg"
    assert 0.0 <= summary["final"]["auc"] <= 1.0
    assert summary["memories_in_sync"]


def test_pyg_minibatch_run_is_reproducible_and_resumes_exactly(tmp_path):
    overrides = {**TINY, "train.epochs": 2, "mech.act": "dpa"}
    whole = run(GraphTask(), overrides, tmp_path / "a", quiet=True)
    again = run(GraphTask(), overrides, tmp_path / "b", quiet=True)
    assert whole["final"] == again["final"]  # same seeds, same sampled neighbours
    run(GraphTask(), {**overrides, "train.stop_after_epoch": 1}, tmp_path / "c", quiet=True)
    resumed = run(GraphTask(), overrides, tmp_path / "c", resume=True, quiet=True)
    assert resumed["final"] == whole["final"]
