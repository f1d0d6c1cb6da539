"""train.diagnostics: per-epoch ARR measurements that leave the run itself unchanged."""

from __future__ import annotations

import json

import pytest

from dnrt_core.engine import run
from tests.toy_task import ToyTask

pytestmark = pytest.mark.usefixtures("one_thread")


def _lines(path):
    return [json.loads(x) for x in (path / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("mech", [{"mech.act": "raa", "mech.arr": True}, {"mech.act": "gelu"}])
def test_diagnostics_measure_without_changing_the_run(tmp_path, mech):
    base = {"train.epochs": 2, "deterministic": True, **mech}
    run(ToyTask(), base, tmp_path / "plain", quiet=True)
    run(ToyTask(), {**base, "train.diagnostics": True}, tmp_path / "diag", quiet=True)
    plain, diag = _lines(tmp_path / "plain"), _lines(tmp_path / "diag")
    for a, b in zip(plain, diag, strict=True):
        for key in ("train_loss", "train_aux_loss", "val_loss", "val_top1", "test_top1"):
            assert a[key] == b[key], key  # same training, bit for bit
        assert not any(k.startswith("diag_") for k in a)
    for line in diag:
        assert set(line["diag_response_rms"]) == {"hidden.0", "hidden.1"}  # ARR or not
        assert all(v > 0 for v in line["diag_response_rms"].values())
        assert sum(line["diag_pred_hist"]) == 48 and len(line["diag_pred_hist"]) == 3
        assert line["diag_task_grad_norm"] > 0
        if "mech.arr" in mech:
            assert line["diag_grad_ratio"] == pytest.approx(
                line["diag_arr_grad_norm"] / line["diag_task_grad_norm"]
            )
            assert -1 <= line["diag_grad_cos"] <= 1
            assert set(line["diag_arr_loss"]) == {"hidden.0", "hidden.1"}
        else:
            assert "diag_grad_ratio" not in line


def test_graph_histogram_counts_the_split_nodes_only(tmp_path):
    over = {"data.num_nodes": 1500, "model.hidden": 8, "train.epochs": 2, "mech.act": "raa",
            "mech.arr": True, "mech.arr_placement": "every_layer_pre",
            "train.diagnostics": True}  # fmt: skip
    summary = run("graph", over, tmp_path / "g", quiet=True)
    for line in _lines(tmp_path / "g"):
        assert sum(line["diag_pred_hist"]) == summary["split_sizes"]["val"]
        assert list(line["diag_response_rms"]) == ["hidden.0.act:in"]
        assert line["diag_grad_ratio"] > 0
