"""Sweeps and paper-style tables from finished run folders."""

from __future__ import annotations

import csv
import io
import json
import statistics
from pathlib import Path

import pytest

from dnrt_core.tools.compare import (
    build_table,
    load_summaries,
    plan_sweep,
    preset_trials,
    run_dir_name,
    run_sweep,
)

MODELS = ["resnet18", "vit_tiny"]
MECHS = ["gelu", "dnrt", "relu"]
SEEDS = [0, 1]


def _top1(model: str, mech: str, seed: int) -> float:
    base = {"resnet18": 90.0, "vit_tiny": 80.0}.get(model, 70.0)
    bonus = {"relu": 0.0, "gelu": 0.5, "dnrt": 2.0}[mech]
    return base + bonus + (0.3 if seed else -0.1)


def _summary(model: str, mech: str, seed: int, **extra) -> dict:
    top1 = _top1(model, mech, seed)
    return {
        "task": "image",
        "dataset": "cifar10",
        "model": model,
        "mechanism": mech,
        "seed": seed,
        "primary_metric": "top1",
        "final": {"top1": top1, "top5": 99.0, "loss": 1.0 - top1 / 100},
        "best": {"epoch": 3, "val": {"top1": top1 + 1}, "test": {"top1": top1 - 1}},
        **extra,
    }


def _write_run(root: Path, summary: dict) -> Path:
    run = root / run_dir_name(summary["model"], summary["mechanism"], summary["seed"])
    run.mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps(summary))
    return run


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    for model in MODELS:
        for mech in MECHS:
            for seed in SEEDS:
                _write_run(tmp_path, _summary(model, mech, seed))
    return tmp_path


def test_table_mean_std_and_layout(runs: Path) -> None:
    summaries = load_summaries(runs)
    assert len(summaries) == 12
    table = build_table(summaries)
    assert table.metric == "top1" and table.rows == ["resnet18", "vit_tiny"]
    assert table.cols == ["relu", "gelu", "dnrt"]  # paper order: baselines first, DNRT last
    cell = table.cells[("vit_tiny", "dnrt")]
    values = [_top1("vit_tiny", "dnrt", s) for s in SEEDS]
    assert cell.n == 2
    assert cell.mean == pytest.approx(statistics.fmean(values))
    assert cell.std == pytest.approx(statistics.stdev(values))  # sample std
    assert table.best_col("resnet18") == "dnrt"

    md = table.to_markdown().splitlines()
    header = next(line for line in md if line.startswith("| model"))
    assert [c.strip() for c in header.strip("|").split("|")] == [
        "model \\ mechanism",
        "relu",
        "gelu",
        "dnrt",
    ]
    row = next(line for line in md if line.startswith("| vit_tiny"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[3] == f"**{cell.mean:.2f} ± {cell.std:.2f}**"
    assert cells[1] == "80.10 ± 0.28" and "**" not in cells[1]
    assert any("n=2" in line for line in md)

    parsed = list(csv.DictReader(io.StringIO(table.to_csv())))
    assert len(parsed) == 6 and list(parsed[0]) == ["row", "col", "mean", "std", "n"]
    hit = next(r for r in parsed if r["row"] == "vit_tiny" and r["col"] == "dnrt")
    assert float(hit["mean"]) == pytest.approx(cell.mean) and hit["n"] == "2"


def test_table_options(runs: Path) -> None:
    summaries = load_summaries(runs)
    one_seed = [s for s in summaries if s["seed"] == 0]
    table = build_table(one_seed, col_order=["dnrt", "gelu"])
    assert table.cols == ["dnrt", "gelu", "relu"]
    assert table.cells[("resnet18", "gelu")].std == 0.0 and table.cells[("resnet18", "gelu")].n == 1
    best = build_table(summaries, which="best")
    assert best.cells[("resnet18", "relu")].mean == pytest.approx(90.1 - 1)
    loss = build_table(summaries, metric="loss")
    assert loss.best_col("resnet18") == "dnrt"  # lowest loss is best
    assert "0.0" in loss.format_cell("resnet18", "dnrt")  # 4 decimals for values <= 1
    partial = build_table(summaries[:-1]).to_markdown()  # one cell lacks a seed
    assert partial.count("(n=1)") == 1 and "n=1–2" in partial
    flipped = build_table(summaries, rows="mechanism", cols="model")
    assert flipped.rows == ["dnrt", "gelu", "relu"] and flipped.cols == MODELS


def test_table_rejects_mixed_runs(runs: Path) -> None:
    summaries = load_summaries(runs)
    graph = _summary("gcn", "dnrt", 0, task="graph", primary_metric="auc")
    graph["final"] = {"auc": 0.8}
    with pytest.raises(ValueError, match="different tasks"):
        build_table([*summaries, graph])
    other = _summary("gcn", "dnrt", 0, primary_metric="top5")
    with pytest.raises(ValueError, match="different primary metrics"):
        build_table([*summaries, other])
    with pytest.raises(ValueError, match="no final metric 'auc'"):
        build_table(summaries, metric="auc")
    c100 = _summary("vit_tiny", "dnrt", 5, dataset="cifar100")
    with pytest.raises(ValueError, match="different datasets"):
        build_table([*summaries, c100])
    with pytest.raises(ValueError, match="no finished runs"):
        build_table([])


def test_plan_sweep(tmp_path: Path) -> None:
    plan = plan_sweep(
        "image", ["GELU", "dnrt", "dpa", "relu+arr"], MODELS, 2, tmp_path, {"train.epochs": 3}
    )
    assert len(plan) == 2 * 4 * 2
    first = plan[0]
    assert (first.model, first.mechanism, first.seed) == ("resnet18", "gelu", 0)
    assert first.run_dir == tmp_path / "resnet18__gelu__s0"
    assert first.overrides == {
        "train.epochs": 3,
        "model.name": "resnet18",
        "mech.act": "gelu",
        "mech.arr": False,
        "mech.dpa": False,
        "seed": 0,
    }
    by_name = {p.name: p.overrides for p in plan}
    assert by_name["vit_tiny__dnrt__s1"]["mech.act"] == "raa"
    assert by_name["vit_tiny__dnrt__s1"]["mech.arr"] is True
    assert by_name["vit_tiny__dpa__s0"]["mech.act"] == "tau"
    assert by_name["vit_tiny__dpa__s0"]["mech.dpa"] is True
    assert by_name["vit_tiny__relu+arr__s0"]["mech.arr"] is True
    assert len({p.run_dir for p in plan}) == len(plan)
    assert [p.seed for p in plan_sweep("image", ["raa"], ["m"], [7, 9], tmp_path)] == [7, 9]
    with pytest.raises(ValueError, match="did you mean 'dnrt'"):
        plan_sweep("image", ["gelu", "dnrtt"], MODELS, 1, tmp_path)
    with pytest.raises(ValueError, match="swept keys"):
        plan_sweep("image", ["gelu"], MODELS, 1, tmp_path, {"seed": 3})


def test_plan_sweep_over_preset_trials(tmp_path: Path) -> None:
    preset = tmp_path / "preset.yaml"
    preset.write_text(
        "task: graph\ntrials:\n  data.split_seed: [3407, 3417, 3427]\n  seed: [3407, 3417, 3427]\n"
    )
    trials = preset_trials(preset)
    assert trials == [{"data.split_seed": s, "seed": s} for s in (3407, 3417, 3427)]
    plan = plan_sweep("graph", ["relu", "dnrt"], ["gcn"], None, tmp_path, {}, trials=trials)
    assert [p.name for p in plan[:3]] == ["gcn__relu__t0", "gcn__relu__t1", "gcn__relu__t2"]
    assert [(p.trial, p.seed) for p in plan[3:]] == [(0, 3407), (1, 3417), (2, 3427)]
    assert plan[4].overrides["data.split_seed"] == 3417 and plan[4].overrides["mech.arr"]
    first_two = plan_sweep("graph", ["relu"], ["gcn"], 2, tmp_path, trials=trials)
    assert [p.name for p in first_two] == ["gcn__relu__t0", "gcn__relu__t1"]
    with pytest.raises(ValueError, match="trials may not set the swept keys"):
        plan_sweep("graph", ["relu"], ["gcn"], None, tmp_path, trials=[{"mech.act": "gelu"}])
    (tmp_path / "none.yaml").write_text("task: graph\n")
    assert preset_trials(tmp_path / "none.yaml") is None
    (tmp_path / "bad.yaml").write_text("trials:\n  seed: [1, 2]\n  data.split_seed: [1]\n")
    with pytest.raises(ValueError, match="lists of one length"):
        preset_trials(tmp_path / "bad.yaml")


def test_run_sweep_resume_logic(tmp_path: Path) -> None:
    plan = plan_sweep("image", ["gelu", "dnrt"], ["vit_tiny"], 2, tmp_path / "sweep")
    assert len(plan) == 4
    done, partial, stale = plan[0], plan[1], plan[2]
    _write_run(tmp_path / "sweep", _summary("vit_tiny", "gelu", 0))  # finished already
    partial.run_dir.mkdir(parents=True)
    (partial.run_dir / "last.pt").write_bytes(b"ckpt")  # interrupted after an epoch
    stale.run_dir.mkdir(parents=True)
    (stale.run_dir / "config.yaml").write_text("seed: 0\n")  # crashed before a checkpoint

    calls: list[tuple[str, bool]] = []

    def fake_run(overrides: dict, out: str, resume: bool) -> dict:
        assert not (Path(out) / "config.yaml").exists()  # stale partial files were cleared
        calls.append((Path(out).name, resume))
        mech = "dnrt" if overrides["mech.arr"] else overrides["mech.act"]
        summary = _summary(overrides["model.name"], mech, overrides["seed"])
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "summary.json").write_text(json.dumps(summary))
        return summary

    summaries = run_sweep(plan, fake_run, progress=False)
    assert calls == [(partial.name, True), (stale.name, False), (plan[3].name, False)]
    assert done.name not in [c[0] for c in calls]
    assert [s["seed"] for s in summaries] == [0, 1, 0, 1]
    assert all(Path(s["_run_dir"]).is_dir() for s in summaries)
    table = build_table(summaries)
    assert table.cells[("vit_tiny", "dnrt")].n == 2

    calls.clear()
    again = run_sweep(plan, fake_run, progress=False)  # everything finished: nothing reruns
    assert calls == [] and len(again) == 4
