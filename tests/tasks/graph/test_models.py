"""Graph task models: every mechanism trains, PyG/DGL parity, DGL neighbour-sampled mini-batches."""

from __future__ import annotations

import sys

import pytest
import torch

from dnrt_core.engine import build
from dnrt_core.engine.config import build_config
from dnrt_core.mechanisms.activations import available_activations
from dnrt_core.mechanisms.arr import ARR
from dnrt_core.mechanisms.dpa import DPA
from dnrt_core.mechanisms.raa import RAA
from tasks.graph import GraphTask
from tasks.graph.backends import get_backend
from tasks.graph.models import GNN
from tasks.graph.sampling import DGLNeighborBatches, blocks_to_edge_index

CPU = torch.device("cpu")
SMALL = {
    "data.num_nodes": 800,
    "data.background_rate": 0.3,
    "data.fraud_rate": 0.1,
    "model.hidden": 16,
}


def make_cfg(**overrides):
    task = GraphTask()
    cfg = build_config(task.default_config(), overrides={**SMALL, **overrides})
    task.validate_config(cfg)
    return task, cfg


def train_steps(task, built, steps: int) -> list[float]:
    """The engine's inner loop (one optimiser step per batch) for a few steps."""
    opt = torch.optim.Adam(built.model.parameters(), lr=0.01)
    losses = []
    built.model.train()
    for epoch in range(steps):
        for batch in task.train_batches(built.data, epoch):
            inputs, targets = task.batch_inputs(batch, CPU)
            out = built.model(*inputs, targets=targets)
            loss = task.loss(out, targets, built.data) + built.model.aux_loss()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    return losses


MECHANISMS = [(a, False) for a in available_activations()] + [("raa", True), ("relu", True)]


@pytest.mark.parametrize("model", ["gcn", "sage"])
@pytest.mark.parametrize(
    ("act", "arr"), MECHANISMS, ids=[f"{a}{'+arr' * r}" for a, r in MECHANISMS]
)
def test_every_mechanism_trains_full_batch(model, act, arr):
    task, cfg = make_cfg(
        **{"model.name": model, "mech.act": act, "mech.arr": arr, "model.num_layers": 3}
    )
    built = build(task, cfg, CPU)
    before = {k: v.clone() for k, v in built.model.model.state_dict().items()}
    losses = train_steps(task, built, 3)
    assert all(torch.isfinite(torch.tensor(losses)))
    after = built.model.model.state_dict()
    assert not torch.equal(
        before["head.lin_l.weight" if model == "sage" else "head.lin.weight"],
        after["head.lin_l.weight" if model == "sage" else "head.lin.weight"],
    )
    acts = [built.model.model.hidden[i].act for i in range(2)]
    assert acts[0] is not acts[1]  # one activation instance per hidden layer
    if act.startswith("raa"):
        assert all(isinstance(a, RAA) for a in acts)
    if act == "dpa":
        assert built.model.report.dpa_sites == ["hidden.0.act", "hidden.1.act"]
        assert all(isinstance(a, DPA) for a in acts)
    if arr:
        assert built.model.report.arr_sites == ["hidden.0", "hidden.1"]  # never the head
        memories = [m for m in built.model.arr.values() if isinstance(m, ARR)]
        assert all(bool(m.initialized.all()) for m in memories)
        assert memories[0].memory.shape == (2, 16)
    metrics = task.evaluate(built.model, built.data, "val", CPU)
    assert set(metrics) == {"auc", "ap", "reck", "top1", "loss"}


def test_arr_uses_training_nodes_only():
    task, cfg = make_cfg(**{"mech.act": "raa", "mech.arr": True, "train.epochs": 1})
    built = build(task, cfg, CPU)
    graph = built.data.state["graph"]
    batch = next(iter(task.train_batches(built.data, 0)))
    assert batch.targets.shape == (graph.num_nodes,)
    labelled = batch.targets >= 0
    assert int(labelled.sum()) == len(graph.train_idx)
    assert bool((batch.targets[graph.val_idx] == -1).all())
    assert bool((batch.targets[graph.y >= 2] == -1).all())  # background nodes are never targets


# --------------------------------------------------------------------------- backends


def _graph_and_models(model: str, undirected: bool, seed: int = 0, **extra):
    task, cfg = make_cfg(
        **{
            "model.name": model,
            "data.to_undirected": undirected,
            "model.batch_norm": True,
            "model.num_layers": 3,
            **extra,
        }
    )
    out = {}
    for backend in ("pyg", "dgl"):
        cfg["data"]["backend"] = backend
        data = task.setup(cfg, device=CPU)
        torch.manual_seed(seed)
        out[backend] = (data, task.build_model(cfg, data))
    return task, out


VARIANTS = [
    ("gcn", {}),
    ("sage", {}),
    ("gcn", {"model.head": "linear"}),
    ("sage", {"model.aggr": "max"}),
    ("sage", {"model.aggr": "pool", "model.head": "linear", "data.self_loops": "add"}),
    ("sage", {"model.aggr": "pool", "model.init": "dgl"}),
]


@pytest.mark.parametrize(("model", "extra"), VARIANTS, ids=lambda v: str(v))
@pytest.mark.parametrize("undirected", [True, False])
def test_pyg_dgl_same_seed_same_weights_and_logits(model, extra, undirected):
    task, built = _graph_and_models(model, undirected, **extra)
    (pdata, pyg), (ddata, dgl_model) = built["pyg"], built["dgl"]
    ps, ds = pyg.state_dict(), dgl_model.state_dict()
    assert list(ps) == list(ds) and all(ps[k].shape == ds[k].shape for k in ps)
    assert all(torch.equal(ps[k], ds[k]) for k in ps)
    pyg.eval(), dgl_model.eval()
    a = pyg(pdata.state["x"], pdata.state["full_graph"])
    b = dgl_model(ddata.state["x"], ddata.state["full_graph"])
    assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("model", ["gcn", "sage"])
def test_pyg_dgl_copied_weights_after_training(model):
    task, cfg = make_cfg(**{"model.name": model, "mech.act": "raa", "mech.arr": True})
    built = {
        b: build(task, {**cfg, "data": {**cfg["data"], "backend": b}}, CPU) for b in ("pyg", "dgl")
    }
    torch.manual_seed(1)
    train_steps(task, built["pyg"], 4)  # trained weights, RAA shifts and ARR memories
    built["dgl"].model.load_state_dict(built["pyg"].model.state_dict())
    logits = [task.full_logits(built[b].model, built[b].data) for b in ("pyg", "dgl")]
    assert torch.allclose(logits[0], logits[1], atol=1e-5)
    for split in ("val", "test"):
        m = [task.evaluate(built[b].model, built[b].data, split, CPU) for b in ("pyg", "dgl")]
        assert abs(m[0]["auc"] - m[1]["auc"]) < 1e-6


@pytest.mark.parametrize("aggr", ["mean", "max", "pool"])
def test_sage_aggregators_match_pyg_edge_list_sageconv(aggr):
    from torch_geometric.nn import SAGEConv

    from tasks.graph.backends import adjacency_t

    torch.manual_seed(0)
    edge_index = torch.randint(0, 40, (2, 200))
    edge_index = edge_index[:, edge_index[1] < 35]  # nodes 35..39 have no in-edges
    x = torch.randn(40, 6, requires_grad=True)
    ours = get_backend("pyg").conv("sage", 6, 5, aggr)
    ref = SAGEConv(6, 5, aggr="max" if aggr == "pool" else aggr, project=aggr == "pool")
    ref.load_state_dict(ours.state_dict())
    # the sparse adjacency merges duplicate edges, so compare with the coalesced edge list
    simple = torch.unique(edge_index, dim=1)
    a = ours(x, adjacency_t(edge_index, 40, gcn=False))
    b = ref(x, simple)
    assert torch.allclose(a, b, atol=1e-5)
    (ga,) = torch.autograd.grad(a.square().sum(), x)
    (gb,) = torch.autograd.grad(b.square().sum(), x)
    assert torch.allclose(ga, gb, atol=1e-5)


def test_linear_head_after_every_activated_conv():
    for model in ("gcn", "sage"):
        gnn = GNN(get_backend("pyg"), model, 8, 16, 2, num_layers=2, head="linear", aggr="pool")
        assert len(gnn.hidden) == 2 and isinstance(gnn.head, torch.nn.Linear)
        assert gnn.head.in_features == 16 and gnn.head.out_features == 2
    task, cfg = make_cfg(**{"model.head": "linear", "mech.act": "dpa", "model.num_layers": 2})
    built = build(task, cfg, CPU)
    assert built.model.report.dpa_sites == ["hidden.0.act", "hidden.1.act"]  # both convs
    with pytest.raises(ValueError, match="model.head"):
        GNN(get_backend("pyg"), "gcn", 8, 16, 2, head="mlp")


@pytest.mark.parametrize("backend", ["pyg", "dgl"])
@pytest.mark.parametrize(("model", "aggr"), [("sage", "pool"), ("sage", "mean"), ("gcn", "mean")])
def test_dgl_init_gives_gadbench_initial_weights(backend, model, aggr):
    """init="dgl": a seed gives the weights of GADBench's DGL GCN / GraphSAGE (2 activated
    convs of 32, then an nn.Linear head), built the way its models/gnn.py builds them."""
    dglnn = pytest.importorskip("dgl.nn.pytorch.conv")

    torch.manual_seed(3417)
    if model == "sage":
        peer = [dglnn.SAGEConv(10, 32, aggr), dglnn.SAGEConv(32, 32, aggr)]
    else:
        peer = [dglnn.GraphConv(10, 32), dglnn.GraphConv(32, 32)]
    peer_head = torch.nn.Linear(32, 2)
    after_peer = torch.rand(3)
    torch.manual_seed(3417)
    ours = GNN(get_backend(backend), model, 10, 32, 2, head="linear", aggr=aggr, init="dgl")
    assert torch.equal(torch.rand(3), after_peer)  # the RNG is left where DGL leaves it
    for conv, theirs in zip((layer.conv for layer in ours.hidden), peer, strict=True):
        if model == "gcn":
            assert torch.equal(conv.lin.weight, theirs.weight.T)
            assert torch.equal(conv.bias, theirs.bias)
            continue
        assert torch.equal(conv.lin_l.weight, theirs.fc_neigh.weight)
        assert torch.equal(conv.lin_r.weight, theirs.fc_self.weight)
        assert torch.equal(conv.lin_l.bias, theirs.fc_self.bias)
        if aggr == "pool":
            assert torch.equal(conv.lin.weight, theirs.fc_pool.weight)
            assert torch.equal(conv.lin.bias, theirs.fc_pool.bias)
    assert torch.equal(ours.head.weight, peer_head.weight)
    assert torch.equal(ours.head.bias, peer_head.bias)
    torch.manual_seed(3417)  # PyG's own init draws other numbers from the same seed
    plain = GNN(get_backend(backend), model, 10, 32, 2, head="linear", aggr=aggr)
    name = "lin" if model == "gcn" else "lin_l"
    first, theirs_first = (getattr(m.hidden[0].conv, name).weight for m in (plain, ours))
    assert not torch.equal(first, theirs_first)


def test_gnn_layout_for_tune():
    model = GNN(get_backend("pyg"), "gcn", 8, 16, 3, num_layers=3)
    names = [n for n, _ in model.named_children()] + [n for n, _ in model.hidden.named_children()]
    assert names == ["hidden", "head", "0", "1"]
    assert [type(m).__name__ for m in model.hidden[0].children()] == [
        "SparseGCNConv",
        "Identity",
        "ReLU",
    ]


def test_dgl_missing_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "dgl", None)  # import dgl -> ImportError
    with pytest.raises(ValueError, match=r'pip install "dnrt\[dgl\]"'):
        get_backend("dgl")
    task, cfg = make_cfg()
    cfg["data"]["backend"] = "dgl"
    with pytest.raises(ValueError, match=r'pip install "dnrt\[dgl\]"'):
        task.validate_config(cfg)


def test_pyg_neighbor_sampler_needs_pyg_lib(monkeypatch):
    import tasks.graph.task as graph_task

    monkeypatch.setattr(graph_task, "pyg_sampler_available", lambda: False)  # as if absent
    task = GraphTask()
    cfg = build_config(task.default_config(), overrides={"data.sampler": "neighbor"})
    with pytest.raises(ValueError, match="needs pyg-lib or torch-sparse.*backend dgl") as err:
        task.validate_config(cfg)
    assert "\n" not in str(err.value)


# --------------------------------------------------------------------------- mini-batches


def test_blocks_to_edge_index_samples_each_node_once():
    import dgl

    torch.manual_seed(0)
    src, dst = torch.randint(0, 300, (2, 3000))
    g = dgl.graph((src, dst), num_nodes=300)
    dgl.seed(0)
    seeds = torch.arange(0, 40)
    input_nodes, output_nodes, blocks = dgl.dataloading.NeighborSampler([3, 4]).sample(g, seeds)
    for block in blocks:  # destination nodes are a prefix of the source nodes
        n = block.num_dst_nodes()
        assert torch.equal(block.srcdata[dgl.NID][:n], block.dstdata[dgl.NID])
    ei = blocks_to_edge_index(blocks)
    n_sub = len(input_nodes)
    assert int(ei.max()) < n_sub
    in_deg = torch.bincount(ei[1], minlength=n_sub)
    assert int(in_deg[:40].max()) <= 4  # seeds: hop-1 fanout (listed last for DGL)
    assert int(in_deg[40 : blocks[0].num_dst_nodes()].max()) <= 3  # hop-1 nodes: hop-2 fanout
    assert int(in_deg[blocks[0].num_dst_nodes() :].sum()) == 0  # outermost nodes: none
    glob = input_nodes[ei]  # every sampled edge exists in g
    assert bool(g.has_edges_between(glob[0], glob[1]).all())


def test_dgl_minibatch_training_and_determinism():
    task, cfg = make_cfg(
        **{
            "data.backend": "dgl",
            "data.sampler": "neighbor",
            "data.batch_size": 64,
            "mech.act": "raa",
            "mech.arr": True,
        }
    )
    built = build(task, cfg, CPU)
    assert isinstance(built.data.train, DGLNeighborBatches)
    n_train = len(built.data.state["graph"].train_idx)
    batches = task.train_batches(built.data, 0)
    assert len(batches) == -(-n_train // 64)
    epoch0, again = list(batches), list(task.train_batches(built.data, 0))
    for a, b in zip(epoch0, again, strict=True):  # same seed order and same sampled neighbours
        assert torch.equal(a.x, b.x) and torch.equal(a.targets, b.targets)
    first = epoch0[0]
    assert int((first.targets >= 0).sum()) == first.num_seeds == 64
    assert bool((first.targets[first.num_seeds :] == -1).all())
    other = next(iter(task.train_batches(built.data, 1)))
    assert not torch.equal(first.targets[:64], other.targets[:64]) or not torch.equal(
        first.x[:64], other.x[:64]
    )
    losses = train_steps(task, built, 3)
    assert len(losses) == 3 * len(batches) and all(torch.isfinite(torch.tensor(losses)))
    assert all(bool(m.initialized.all()) for m in built.model.arr.values())
    metrics = task.evaluate(built.model, built.data, "test", CPU)  # full-batch inference
    assert 0.0 <= metrics["auc"] <= 1.0


def test_sparse_matmul_gradient_uses_cached_transpose():
    from tasks.graph.backends import adjacency_t
    from tasks.graph.pyg_conv import sparse_matmul, transpose_of

    torch.manual_seed(0)
    edge_index = torch.randint(0, 50, (2, 300))
    adj_t = adjacency_t(edge_index, 50, gcn=True)
    dense = adj_t.to_dense()
    x = torch.randn(50, 4, requires_grad=True)
    w = torch.randn(50, 4)
    (sparse_matmul(adj_t, x) * w).sum().backward()
    assert torch.allclose(x.grad, dense.t() @ w, atol=1e-6)
    assert transpose_of(adj_t) is transpose_of(adj_t)  # built once per adjacency


@pytest.mark.parametrize("mech", ["raa", "dnrt", "dpa"])
def test_pyg_gcn_exports(mech, onnx_tools, tmp_path):
    """A tuned PyG GCN: torch.export traces it on the task's sparse CSR adjacency (a program in
    memory: torch.export.save and the ONNX exporters take no sparse input); on an
    ``edge_index`` graph both ONNX exporters write it."""
    from dnrt_core import tune
    from dnrt_core.tools.export import export_onnx, export_program, export_pt2, max_difference
    from tasks.graph.backends import PyGBackend, adjacency_t
    from tasks.graph.models import ARR_SITES, DPA_SITES

    torch.manual_seed(0)
    n = 30
    x, edge_index = torch.randn(n, 8), torch.randint(0, n, (2, 90))
    adj_t = adjacency_t(edge_index, n, gcn=True)
    kwargs = {
        "raa": {"act": "raa"},
        "dnrt": {"act": "raa", "arr": {"sites": ARR_SITES, "pool": "node"}},
        "dpa": {"act": "dpa", "dpa": {"sites": DPA_SITES, "pool": "node"}},
    }
    model = tune(GNN(PyGBackend(), "gcn", 8, 16, 4, num_layers=3), **kwargs[mech],
                 example_inputs=(x, adj_t))  # fmt: skip
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, RAA):
                m.weight.normal_(0.0, 0.1)
    model.eval()
    program = export_program(model, (x, adj_t))  # static shapes with a sparse input
    assert max_difference(model, program, (x, adj_t)) < 1e-5
    with pytest.raises(ValueError, match="sparse_csr"):  # torch.export.save cannot write it
        export_pt2(model, (x, adj_t), tmp_path / "gcn.pt2")
    for dynamo in (True, False):
        path = export_onnx(model, (x, edge_index), tmp_path / f"gcn{dynamo}.onnx", dynamo=dynamo,
                           dynamic_batch=False, optimize=False)  # fmt: skip
        assert max_difference(model, path, (x, edge_index)) < 1e-5


@pytest.mark.parametrize("model", ["gcn", "sage"])
@pytest.mark.parametrize(
    ("placement", "sites"),
    [
        (None, ["hidden.0", "hidden.1"]),
        ("every_layer", ["hidden.0", "hidden.1"]),
        ("last_layer", ["hidden.1"]),
        ("every_layer_pre", ["hidden.0.act:in", "hidden.1.act:in"]),
        ("last_layer_pre", ["hidden.1.act:in"]),
    ],
)
def test_gnn_arr_placements(model, placement, sites):
    """GNN placements on a 3-layer GCN / SAGE (two hidden layers): every hidden layer or the
    last, after or before its activation; the pre-activations take negative values."""
    task, cfg = make_cfg(**{"model.name": model, "model.num_layers": 3, "mech.act": "relu",
                            "mech.arr": True, "mech.arr_placement": placement})  # fmt: skip
    built = build(task, cfg, device=CPU)
    tuned = built.model
    assert tuned.report.arr_sites == sites
    inputs, targets = task.batch_inputs(next(iter(task.train_batches(built.data, 0))), CPU)
    tuned.train()
    tuned(*inputs, targets=targets)
    assert len(tuned._arr_losses) == len(sites)
    negative = any(bool((r < 0).any()) for r in tuned._arr_responses.values())
    assert negative == str(placement).endswith("_pre")  # node-wise: ReLU inputs go negative


def test_tune_default_arr_on_gnn_is_the_selected_one():
    """tune(gnn, arr=True): every hidden layer, λ = 0.01 (chosen on Tolokers validation)."""
    from dnrt_core import tune

    gnn = GNN(get_backend("pyg"), "gcn", 8, 16, 2, num_layers=3)
    tuned = tune(gnn, act="raa", arr=True, family="gnn")
    assert tuned.arr_spec.arr_lambda == 0.01
    assert tuned.report.arr_sites == ["hidden.0", "hidden.1"]
    assert "ARR placement every_layer" in str(tuned.report) and "lambda 0.01" in str(tuned.report)
    assert tune(GNN(get_backend("pyg"), "gcn", 8, 16, 2), arr={"arr_lambda": 2.0},
                family="gnn").arr_spec.arr_lambda == 2.0  # fmt: skip
