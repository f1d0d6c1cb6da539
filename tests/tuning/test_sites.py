"""Site patterns, model families and their default ARR / DPA placement."""

from __future__ import annotations

import pytest
import timm
import torchvision
from torch import nn

from dnrt_core.tuning.sites import (
    default_arr_sites,
    default_dpa_sites,
    detect_family,
    is_activation,
    match_any,
    match_name,
    vit_pool,
)

from .helpers import make_vit

pytestmark = pytest.mark.usefixtures("one_thread")


def test_glob_patterns():
    assert match_name("blocks.3", "blocks.*")
    assert not match_name("blocks.3.mlp", "blocks.*")
    assert match_name("blocks.3.mlp.act", "blocks.**")
    assert match_name("layer4", "layer4")
    assert match_name("", "**") and not match_name("", "*")
    assert match_any("layer4.1", ["layer3.*", "layer4.*"])
    assert not match_any("layer4", "layer4.*")


def test_families_and_default_sites():
    vit = make_vit(depth=2)
    assert detect_family(vit) == "vit"
    assert vit_pool(vit) == "token"
    assert default_arr_sites(vit, "vit") == (["blocks.*"], "token")
    assert default_dpa_sites(vit, "vit") == (["blocks.**"], "token")
    resnet = torchvision.models.resnet18(num_classes=10)
    assert detect_family(resnet) == "cnn"
    assert default_arr_sites(resnet, "cnn") == (["layer4"], "avg")
    assert default_dpa_sites(resnet, "cnn") == (["layer4.1", "layer4.1.**"], "avg")
    mlp = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    assert detect_family(mlp) == "generic"
    with pytest.raises(ValueError, match="cannot infer ARR sites"):
        default_arr_sites(mlp, "generic")


def test_is_activation_skips_gates():
    assert is_activation(nn.GELU()) and is_activation(nn.ReLU())
    assert not is_activation(nn.Sigmoid()) and not is_activation(nn.Tanh())
    assert is_activation(timm.layers.activations.GELU())


def test_arr_placements_on_torchvision_resnet():
    """Named placements resolve on torchvision's ResNet too; its BasicBlock calls one ``relu``
    twice, so a pre-activation site there is refused at the first forward, not trained wrong."""
    import torch

    from dnrt_core import tune
    from dnrt_core.tuning.sites import ARR_PLACEMENTS, arr_placement_sites

    resnet = torchvision.models.resnet18(num_classes=10)
    assert arr_placement_sites(resnet, "cnn", "every_stage") == (
        ["layer1", "layer2", "layer3", "layer4"],
        "avg",
    )
    assert arr_placement_sites(resnet, "cnn", "every_block")[0][-2:] == ["layer4.0", "layer4.1"]
    assert arr_placement_sites(resnet, "cnn", "last_stage_pre")[0] == ["layer4.1.relu:in"]
    assert ARR_PLACEMENTS["cnn"][0] == "last_stage" and ARR_PLACEMENTS["gnn"][0] == "every_layer"
    with pytest.raises(ValueError, match="valid: every_layer, last_layer"):
        arr_placement_sites(resnet, "gnn", "every_stage")
    assert tune(torchvision.models.resnet18(), arr=True).arr_spec.arr_lambda == 1.0  # CNN
    assert tune(make_vit(depth=2), arr=True).arr_spec.arr_lambda == 10.0  # the paper's ViT
    tuned = tune(resnet, arr={"placement": "every_block"})
    report = str(tuned.report)
    assert "ARR at 8 sites" in report and "ARR placement every_block" in report
    assert "dnrt's reading of the paper" in report
    with pytest.raises(ValueError, match="runs more than once per forward"):
        tune(torchvision.models.resnet18(num_classes=10), arr={"placement": "last_stage_pre"},
             example_inputs=torch.randn(2, 3, 32, 32))  # fmt: skip
