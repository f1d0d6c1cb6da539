"""Evaluation passes the labels to a DPA model (its counter advances as released)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dnrt_core import tune
from dnrt_core.engine.metrics import collapsed_class, collect_predictions


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


@pytest.mark.parametrize("count_eval", [True, False])
def test_eval_forwards_count_for_dpa(count_eval):
    tuned = tune(_mlp(), act="dpa", dpa={"count_eval": count_eval}, num_classes=3)
    batches = [(torch.randn(5, 4), torch.randint(0, 3, (5,))) for _ in range(3)]
    logits, targets = collect_predictions(tuned, batches, lambda b: ((b[0],), b[1]))
    assert logits.shape == (15, 3) and torch.equal(targets, torch.cat([b[1] for b in batches]))
    assert tuned.counts_eval_targets is count_eval
    (dpa,) = tuned.dpa_modules()
    assert int(dpa.step) == (3 if count_eval else 0)
    assert torch.all(dpa.forward_memory == 0)  # eval never updates the memories
    # a model without the flag is called without labels
    plain = _mlp()
    logits, _ = collect_predictions(plain, batches, lambda b: ((b[0],), b[1]))
    assert logits.shape == (15, 3)


@pytest.mark.parametrize(
    ("per_class", "expected"),
    [
        ([100.0, 0.1, 0.0, 0.0], 0),  # the long-tail collapse: class 0 for all but one image
        ([0.0, 0.0, 99.0], 2),
        ([100.0, 0.0, float("nan"), 0.0], 0),  # absent classes do not count
        ([60.0, 30.0, 0.0], None),  # two classes still right
        ([100.0, 0.0], None),  # binary: one class right is not a collapse signal
        ([100.0, float("nan"), float("nan")], None),  # fewer than 3 classes present
        ([0.0, 0.0, 0.0], None),
        (None, None),  # AUC tasks carry no per-class accuracy
    ],
)
def test_collapsed_class(per_class, expected):
    assert collapsed_class(per_class) == expected
