"""The Tuned wrapper: activation modules called several times per forward get one instance
per call (torchvision's BasicBlock / Bottleneck reuse ``self.relu``)."""

from __future__ import annotations

import warnings

import pytest
import timm
import torch
import torchvision
from torch import nn

from dnrt_core import RAA, tune
from dnrt_core.tuning import PerCallActivation

from .helpers import count_modules, roundtrip, train_steps, tune_warnings

pytestmark = pytest.mark.usefixtures("one_thread")


def test_torchvision_resnet18_reused_relu_gets_one_instance_per_call():
    model = torchvision.models.resnet18(num_classes=10)
    tuned = tune(model, act="raa", arr=True)
    assert tuned.report.family == "cnn" and tuned.report.arr_sites == ["layer4"]
    # one module per name before the first forward: stem relu + one relu per BasicBlock
    assert len(tuned.report.replaced) == 9 and count_modules(tuned, RAA) == 9
    x = torch.randn(2, 3, 32, 32)
    messages = tune_warnings(tuned.materialize, x)
    assert len(messages) == 8
    assert any("layer1.0.relu is called 2x per forward" in m for m in messages)
    assert count_modules(tuned, RAA) == 1 + 8 * 2
    assert tuned.report.per_call == {f"layer{i}.{j}.relu": 2 for i in range(1, 5) for j in (0, 1)}
    split = tuned.model.layer2[1].relu
    assert isinstance(split, PerCallActivation) and split.calls[0] is not split.calls[1]
    assert split.calls[0].weight is not split.calls[1].weight
    assert isinstance(tuned.model.relu, RAA)  # the stem relu is called once

    y = torch.tensor([4, 4])
    aux = train_steps(tuned, (x,), y, steps=2)
    assert aux[1] > 0
    # both call sites train their own parameters
    for inst in split.calls:
        assert inst.weight.grad is not None and inst.weight.grad.abs().sum() > 0
    assert not torch.equal(split.calls[0].weight, split.calls[1].weight)

    # a fresh, not yet materialised model loads the split checkpoint
    fresh = tune(torchvision.models.resnet18(num_classes=10), act="raa", arr=True)
    fresh.load_state_dict(roundtrip(tuned.state_dict()))
    assert count_modules(fresh, RAA) == 17
    tuned.eval()
    fresh.eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), tuned(x))
    torch.testing.assert_close(fresh.arr["layer4"].memory, tuned.arr["layer4"].memory)


def test_reuse_detected_on_first_training_forward_too():
    tuned = tune(torchvision.models.resnet18(num_classes=4), act="raa_relu")
    messages = tune_warnings(tuned.train(), torch.randn(2, 3, 32, 32), targets=torch.tensor([0, 1]))
    assert len(messages) == 8 and any(m.startswith("dnrt.tune: layer4.1.relu is") for m in messages)
    assert count_modules(tuned, RAA) == 17


def test_torchvision_bottleneck_reuses_relu_at_different_widths():
    """Bottleneck calls self.relu on width and 4·width channels: each call sizes its own RAA."""
    tuned = tune(torchvision.models.resnet50(num_classes=4), act="raa")
    assert len(tune_warnings(tuned.materialize, torch.randn(1, 3, 32, 32))) == 16
    calls = tuned.model.layer1[0].relu.calls
    assert [c.num_features for c in calls] == [64, 64, 256]
    assert count_modules(tuned, RAA) == 1 + 16 * 3


def test_timm_resnet_separate_activations_no_split():
    model = timm.create_model("resnet18", num_classes=5)
    tuned = tune(model, act="raa", arr=True)
    assert tuned.report.arr_sites == ["layer4"]
    x = torch.randn(2, 3, 32, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no reuse warning
        tuned.materialize(x)
    assert not tuned.report.per_call
    assert len(tuned.report.replaced) == 17 and count_modules(tuned, RAA) == 17
    assert count_modules(tuned, nn.ReLU) == 0
    aux = train_steps(tuned, (x,), torch.tensor([2, 2]), steps=2)
    assert aux[1] > 0
    assert tuned.model.layer4[1].act2.weight.grad.abs().sum() > 0
