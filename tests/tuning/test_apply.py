"""tune(): DNRT / DPA on stock timm, torchvision and PyG models (tiny inputs, CPU)."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from dnrt_core import ARR, DPA, GDN, RAA, TAU, tune

from .helpers import count_modules, make_vit, roundtrip, train_steps, tune_warnings

pytestmark = [
    pytest.mark.filterwarnings("ignore::UserWarning:torch_geometric"),
    pytest.mark.usefixtures("one_thread"),
]


# --------------------------------------------------------------------------- ViT


def test_vit_dnrt_train_eval_and_checkpoint():
    x = torch.randn(4, 3, 32, 32)
    y = torch.tensor([1, 3, 1, 3])  # repeated classes: the ARR "after" target differs from x
    tuned = tune(make_vit(), act="raa", arr=True)
    assert tuned.report.family == "vit"
    assert count_modules(tuned, RAA) == 12 and count_modules(tuned, nn.GELU) == 0
    assert tuned.report.replaced == [f"blocks.{i}.mlp.act" for i in range(12)]
    assert tuned.report.arr_sites == [f"blocks.{i}" for i in range(12)]
    assert len(tuned.arr) == 12 and all(isinstance(a, ARR) for a in tuned.arr.values())
    tuned.materialize(x)
    # RAA sits on the MLP hidden features (4·192); no split needed for a ViT
    assert {m.num_features for m in tuned.modules() if isinstance(m, RAA)} == {768}
    assert not tuned.report.per_call

    aux = train_steps(tuned, (x,), y, steps=2)
    assert all(a > 0 for a in aux)
    assert all(bool(a.initialized[[1, 3]].all()) for a in tuned.arr.values())
    raa = tuned.model.blocks[0].mlp.act
    assert raa.weight.grad is not None and raa.weight.grad.abs().sum() > 0
    assert raa.weight.abs().sum() > 0  # trained away from its zero init
    # aux_loss = lambda · mean over the 12 sites of the batch-mean ARR loss
    tuned(x, targets=y)
    per_site = torch.stack(tuned._arr_losses)
    assert per_site.numel() == 12
    torch.testing.assert_close(tuned.aux_loss(), 10.0 * per_site.mean())

    memories = {k: v.clone() for k, v in tuned.memory_state().items()}
    tuned.eval()
    with torch.no_grad():
        reference_out = tuned(x, targets=y)
    assert tuned.aux_loss().item() == 0.0
    for k, v in tuned.memory_state().items():
        assert torch.equal(v, memories[k]), k

    fresh = tune(make_vit(), act="raa", arr=True)
    fresh.load_state_dict(roundtrip(tuned.state_dict()))
    fresh.eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), reference_out)
    for k, v in fresh.memory_state().items():
        assert torch.equal(v, memories[k]), k
    assert len(memories) == 24  # memory + initialized per site


def test_vit_dpa_every_block():
    x = torch.randn(4, 3, 32, 32)
    y = torch.tensor([0, 1, 0, 1])
    tuned = tune(make_vit(depth=3), act="dpa", dpa={"interval": 1})
    assert count_modules(tuned, DPA) == 3 and count_modules(tuned, nn.GELU) == 0
    tuned.materialize(x)
    train_steps(tuned, (x,), y, steps=2)
    for dpa in tuned.dpa_modules():  # zero-initialised; classes 0 and 1 were updated
        assert dpa.forward_memory.shape == dpa.backward_memory.shape == (10, 768)
        for memory in (dpa.forward_memory, dpa.backward_memory):
            assert (memory[:2] != 0).all(dim=1).all() and (memory[2:] == 0).all()


# --------------------------------------------------------------------------- CNNs


@pytest.mark.parametrize("act,cls", [("gdn", GDN), ("tau", TAU), ("relu", nn.ReLU)])
def test_other_mechanisms_swap_every_activation(act, cls):
    tuned = tune(timm.create_model("resnet18", num_classes=3), act=act)
    assert count_modules(tuned, cls) == 17
    x = torch.randn(2, 3, 32, 32)
    out = tuned.materialize(x)(x)
    assert out.shape == (2, 3) and torch.isfinite(out).all()


# --------------------------------------------------------------------------- GNN


def _graph(num_nodes: int = 30, features: int = 8, classes: int = 3):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(num_nodes, features, generator=g)
    src = torch.randint(0, num_nodes, (90,), generator=g)
    dst = torch.randint(0, num_nodes, (90,), generator=g)
    edge_index = torch.cat([torch.stack([src, dst]), torch.stack([dst, src])], dim=1)
    y = torch.randint(0, classes, (num_nodes,), generator=g)
    y[::3] = -1  # unlabelled nodes
    return x, edge_index, y


def _gcn(classes: int = 3):
    from torch_geometric.nn.models import GCN

    torch.manual_seed(0)
    return GCN(in_channels=8, hidden_channels=16, num_layers=3, out_channels=classes)


def test_pyg_gcn_dnrt_reused_act_and_unlabelled_nodes():
    x, edge_index, y = _graph()
    tuned = tune(_gcn(), act="raa", arr=True)
    assert tuned.report.family == "gnn"
    assert tuned.report.replaced == ["act"]
    assert tuned.report.arr_sites == ["convs.0", "convs.1"]
    assert tune_warnings(tuned.materialize, x, edge_index) == [
        "dnrt.tune: act is called 2x per forward; gave each call its own RAA instance "
        "(act.calls.0-1)"
    ]
    assert count_modules(tuned, RAA) == 2 and tuned.report.per_call == {"act": 2}

    captured = {}
    tuned.model.convs[0].register_forward_hook(lambda m, i, o: captured.__setitem__("h", o))
    tuned.train()
    out = tuned(x, edge_index, targets=y)
    assert out.shape == (30, 3)
    # ARR saw the labelled nodes only, in node order
    reference = ARR(3).train()
    reference(captured["h"].detach()[y >= 0], y[y >= 0])
    torch.testing.assert_close(tuned.arr["convs_0"].memory, reference.memory)
    assert torch.equal(tuned.arr["convs_0"].initialized, reference.initialized)
    assert tuned.aux_loss() > 0
    (F.cross_entropy(out[y >= 0], y[y >= 0]) + tuned.aux_loss()).backward()
    for inst in tuned.model.act.calls:
        assert inst.weight.grad is not None and inst.weight.grad.abs().sum() > 0


def test_pyg_gcn_dpa_ignores_unlabelled_nodes():
    x, edge_index, y = _graph()
    tuned = tune(_gcn(), act="dpa", dpa={"interval": 1})
    assert tuned.report.dpa_sites == ["act"]
    assert len(tune_warnings(tuned.materialize, x, edge_index)) == 1
    dpas = tuned.dpa_modules()
    assert len(dpas) == 2
    captured = {}
    tuned.model.convs[0].register_forward_hook(lambda m, i, o: captured.__setitem__("h", o))
    train_steps(tuned, (x, edge_index), y, steps=1)
    # the first DPA (after convs.0, no norm): the per-node EMA from zero, in node order,
    # over the labelled nodes only
    h = captured["h"].detach()
    for k in range(3):
        expected = torch.zeros(h.shape[1])
        for row in h[y == k]:
            expected += 0.9 * (row - expected)
        torch.testing.assert_close(dpas[0].forward_memory[k], expected)
    assert int(dpas[0].step) == 1
    train_steps(tuned, (x, edge_index), y, steps=2)
    assert all(d.last_selected is not None for d in dpas)
    selected = torch.cat([d.last_selected for d in dpas])
    torch.testing.assert_close(tuned.aux_loss(), selected.square().mean())


def test_bad_arguments():
    vit = make_vit(depth=1)
    with pytest.raises(ValueError, match="did you mean"):
        tune(vit, act="gleu")
    with pytest.raises(ValueError, match="match no module"):
        tune(vit, act="raa", arr={"sites": "nothing.*"})
    with pytest.raises(ValueError, match="unknown ARRSpec keys"):
        tune(vit, arr={"lamda": 3})
