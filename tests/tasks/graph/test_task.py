"""Graph task end to end: metrics, config validation, engine runs, configs, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from dnrt_core.engine import build, resolve_config, run
from dnrt_core.engine.config import build_config
from dnrt_core.tools.compare import preset_trials
from dnrt_core.tuning.sites import DEFAULT_ARR_LAMBDA
from tasks.graph import GraphTask
from tasks.graph.metrics import node_metrics

CPU = torch.device("cpu")
REPO = Path(__file__).resolve().parents[3]
TINY = {
    "data.num_nodes": 1500,
    "data.background_rate": 0.3,
    "data.fraud_rate": 0.08,
    "model.hidden": 16,
}


def test_auc_ap_match_sklearn_on_tiny_example():
    logits = torch.tensor([[2.0, 0.1], [0.3, 0.2], [0.0, 1.5], [1.0, 1.2], [0.5, -0.5], [0.1, 0.9]])
    labels = torch.tensor([0, 0, 1, 0, 1, 1])
    m = node_metrics(logits, labels, 2)
    fraud_prob = logits.softmax(1)[:, 1].numpy()
    assert m["auc"] == pytest.approx(roc_auc_score(labels.numpy(), fraud_prob))
    assert m["ap"] == pytest.approx(average_precision_score(labels.numpy(), fraud_prob))
    assert m["auc"] == pytest.approx(7 / 9)  # 7 of the 9 (fraud, normal) pairs ranked right
    assert m["top1"] == pytest.approx(100 * 4 / 6)
    assert m["reck"] == pytest.approx(2 / 3)  # K = 3 frauds; the top 3 hold 2 of them
    assert m["loss"] == pytest.approx(float(torch.nn.functional.cross_entropy(logits, labels)))


def test_multiclass_metrics_macro_ovr():
    rng = np.random.default_rng(0)
    logits = torch.from_numpy(rng.standard_normal((60, 3)).astype(np.float32))
    labels = torch.arange(60) % 3
    m = node_metrics(logits, labels, 3)
    probs = logits.softmax(1).numpy()
    assert m["auc"] == pytest.approx(roc_auc_score(labels.numpy(), probs, multi_class="ovr"))
    assert np.isnan(node_metrics(logits[:5], torch.zeros(5, dtype=torch.long), 3)["auc"])


def test_validate_config_one_line_errors():
    task = GraphTask()

    def check(overrides, match):
        cfg = build_config(task.default_config(), overrides=overrides)
        with pytest.raises(ValueError, match=match) as err:
            task.validate_config(cfg)
        assert "\n" not in str(err.value)

    check({"data.dataset": "dgrapfin"}, "did you mean 'dgraphfin'")
    check({"model.name": "gat"}, "unknown graph model 'gat'")
    check({"data.backend": "torch"}, "unknown graph backend")
    check({"data.fanout": "10,x"}, "comma-separated integers")
    check(
        {"data.backend": "dgl", "data.sampler": "neighbor", "data.fanout": "10"},
        "1 hops but model.num_layers is 2",
    )
    check({"data.feature_norm": "l2"}, "unknown feature_norm")
    check({"model.head": "mlp"}, "unknown model.head 'mlp'")
    check({"model.aggr": "lstm"}, "unknown model.aggr 'lstm'")
    check({"model.init": "xavier"}, "unknown model.init 'xavier'")
    check({"data.self_loops": "yes"}, "unknown self_loops 'yes'")
    check({"data.split_ratios": [0.5, 0.6]}, "data.split_ratios must be")
    check({"data.split_seed": "a"}, "data.split_seed must be an integer")


def test_primary_metric_follows_the_data(real_data):
    task = GraphTask()
    cfg = build_config(
        task.default_config(), overrides={"data.dataset": "cora", "data.data_dir": str(real_data)}
    )
    data = task.setup(cfg, device=CPU)
    assert (task.primary_metric, data.num_classes) == ("top1", 7)
    assert "top1=" in task.format_report({"top1": 81.0, "auc": 0.9, "ap": 0.8, "loss": 0.6})
    cfg = build_config(task.default_config(), overrides=TINY)
    task.setup(cfg, device=CPU)
    assert task.primary_metric == "auc"
    assert task.format_report({"auc": 0.9, "ap": 0.5, "top1": 97.0, "loss": 0.1}).startswith(
        "auc=0.9000  ap=0.5000"
    )


def test_class_weight_and_eval_cache():
    task = GraphTask()
    cfg = build_config(task.default_config(), overrides={**TINY, "train.class_weight": True})
    built = build(task, cfg, CPU)
    counts = torch.tensor(built.data.info["class_counts"], dtype=torch.float)
    assert torch.allclose(built.data.state["class_weight"], counts.sum() / (2 * counts))
    first = task.full_logits(built.model, built.data)
    assert task.full_logits(built.model, built.data) is first  # val + test share one forward
    with torch.no_grad():
        built.model.model.head.bias.add_(1.0)
    assert task.full_logits(built.model, built.data) is not first  # a weight changed


def test_engine_run_synthetic_dnrt(tmp_path):
    overrides = {**TINY, "train.epochs": 4, "mech.act": "raa", "mech.arr": True}
    summary = run(GraphTask(), overrides, tmp_path / "run", quiet=True)
    assert summary["primary_metric"] == "auc" and summary["mechanism"] == "dnrt"
    assert set(summary["final"]) == {"auc", "ap", "reck", "top1", "loss"}
    assert 0.0 <= summary["final"]["auc"] <= 1.0
    assert summary["dataset"] == "synthetic" and summary["num_nodes"] == 1500
    assert summary["arr_lambda"] == DEFAULT_ARR_LAMBDA["gnn"]  # the task defers to tune's default
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 4 and "val_auc" in json.loads(lines[-1])
    assert (tmp_path / "run" / "best.pt").exists()


def test_engine_run_dgl_minibatch_is_reproducible(tmp_path):
    overrides = {
        **TINY,
        "data.backend": "dgl",
        "data.sampler": "neighbor",
        "data.batch_size": 256,
        "train.epochs": 2,
        "mech.act": "dpa",
    }
    first = run(GraphTask(), overrides, tmp_path / "a", quiet=True)
    second = run(GraphTask(), overrides, tmp_path / "b", quiet=True)
    assert first["sampler"] == "neighbor" and first["backend"] == "dgl"
    assert first["final"] == second["final"]  # same seeds, same sampled neighbours


def test_engine_run_cora_learns(real_data, tmp_path):
    overrides = {
        "data.dataset": "cora",
        "data.data_dir": str(real_data / "graphs"),
        "train.epochs": 15,
        "model.name": "gcn",
    }
    summary = run(GraphTask(), overrides, tmp_path / "cora", quiet=True)
    assert summary["primary_metric"] == "top1"
    assert summary["best"]["test"]["top1"] > 60.0  # 7 classes: chance is ~14-30 %


@pytest.mark.parametrize(
    "path", sorted((REPO / "configs").glob("graph_*.yaml")), ids=lambda p: p.stem
)
def test_configs_resolve(path):
    cfg = resolve_config(GraphTask(), {}, path)
    parts = path.stem.split("_")[1:]
    if parts[0] == "gadbench":  # one protocol preset per data set, for every model
        assert cfg["data"]["dataset"] == parts[1] and cfg["data"]["split_ratios"]
        trials = preset_trials(path)
        assert [t["seed"] for t in trials] == [3407 + 10 * t for t in range(10)]
        assert all(t["data.split_seed"] == t["seed"] for t in trials)
        return
    dataset, model = parts[:2]
    assert cfg["task"] == "graph" and cfg["data"]["dataset"] == dataset
    assert cfg["model"]["name"] == model
    assert cfg["mech"]["arr_lambda"] is None  # the GNN default (tune) applies


@pytest.mark.parametrize("dataset", ["tolokers", "reddit"])
def test_gadbench_preset_trains(real_data, tmp_path, dataset):
    """One short trial of the preset: its split, Rec@K and validation-AUPRC selection."""
    config = REPO / "configs" / f"graph_gadbench_{dataset}.yaml"
    overrides = {"data.data_dir": str(real_data / "graphs"), "train.epochs": 3}
    overrides["model.name"] = "sage"
    summary = run(GraphTask(), overrides, tmp_path / "r", config_file=config, quiet=True)
    n = summary["num_nodes"]
    train, val, test = (summary["split_sizes"][s] for s in ("train", "val", "test"))
    ratios = {"tolokers": (0.5, 0.25), "reddit": (0.4, 0.2)}[dataset]
    assert (train, val) == (int(n * ratios[0]), int(n * ratios[1])) and train + val + test == n
    assert summary["select_metric"] == "ap" and summary["split_seed"] == 3407
    assert 0.0 <= summary["best"]["test"]["reck"] <= 1.0
    aps = [json.loads(ln)["val_ap"] for ln in (tmp_path / "r" / "metrics.jsonl").open()]
    assert summary["best"]["epoch"] == 1 + aps.index(max(aps))


def test_cli_train_graph(tmp_path):
    from typer.testing import CliRunner

    from cli import app

    out = tmp_path / "cli"
    args = [
        "train",
        "graph",
        "--model",
        "sage",
        "--act",
        "dnrt",
        "--epochs",
        "2",
        "--quiet",
        "--set",
        "data.num_nodes=1500",
        "--set",
        "model.hidden=16",
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == "sage" and summary["mechanism"] == "dnrt"
    bad = CliRunner().invoke(
        app,
        ["train", "graph", "--dataset", "reddit", "--epochs", "1", "--out", str(tmp_path / "bad")],
    )
    assert bad.exit_code == 2 and "--data-dir" in bad.output


@pytest.mark.parametrize("model", ["gcn", "sage"])
def test_dpa_channel_loss_acts_on_gcn_and_sage(model, tmp_path):
    """Under the GADBench preset's model form (linear head, SAGE pool, no dropout), on a graph
    where the ReLU baseline learns, DPA's channel loss (the logged aux loss) is non-zero at
    some step and the run differs from the ReLU run."""
    preset = resolve_config(GraphTask(), {}, REPO / "configs" / "graph_gadbench_reddit.yaml")
    form = {f"model.{k}": preset["model"][k] for k in ("head", "aggr", "dropout", "num_layers")}
    base = {**TINY, **form, "model.name": model, "train.epochs": 12, "train.class_weight": True}
    logs = {}
    for act in ("relu", "dpa"):
        summary = run(GraphTask(), {**base, "mech.act": act}, tmp_path / act, quiet=True)
        lines = (tmp_path / act / "metrics.jsonl").read_text().splitlines()
        logs[act] = [json.loads(ln) for ln in lines]
        if act == "relu":
            assert summary["best"]["val"]["auc"] > 0.65  # the baseline learns
    assert max(r["train_aux_loss"] for r in logs["dpa"]) > 0.0
    assert [r["val_auc"] for r in logs["dpa"]] != [r["val_auc"] for r in logs["relu"]]
