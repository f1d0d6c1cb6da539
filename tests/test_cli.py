"""CLI surface: help texts, compare (sweep + --from + --export), profile, plot."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cli import app

runner = CliRunner()


@pytest.mark.parametrize(
    "args",
    [[], ["train"], ["eval"], ["compare"], ["profile"], ["plot"], ["plot", "responses"],
     ["plot", "curves"], ["tasks"]],
)  # fmt: skip
def test_help(args):
    result = runner.invoke(app, [*args, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


#: options each built-in task declares (beside the shared ones), and some it must not show
TASK_OPTIONS = {
    "image": (["--weak-aug", "--img-size", "--download", "vit_tiny", "resnet18"], ["--backend"]),
    "graph": (["--backend", "--sampler", "--fanout", "sage"], ["--weak-aug", "--imbalance"]),
    "longtail": (["--imbalance", "--sampler", "--weak-aug", "resnet32"], ["--fanout"]),
}
SHARED = ["--epochs", "--lr", "--act", "--arr", "--set", "--config", "--out", "--data-dir"]


@pytest.mark.parametrize("task", list(TASK_OPTIONS))
def test_train_help_shows_the_task_options(task):
    shown, hidden = TASK_OPTIONS[task]
    result = runner.invoke(app, ["train", task, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for text in [*SHARED, *shown]:
        assert text in result.output, f"{text} missing from `dnrt train {task} --help`"
    for flag in hidden:
        assert flag not in result.output
    compare = runner.invoke(app, ["compare", task, "--help"], env={"COLUMNS": "200"})
    assert compare.exit_code == 0, compare.output
    assert shown[0] in compare.output and "--acts" in compare.output
    assert "--model " not in compare.output  # compare sweeps --models


def test_train_lists_tasks_and_a_broken_plugin(toy_plugin):
    result = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for name in ("image", "graph", "longtail", "toy", "broken"):
        assert name in result.output
    broken = runner.invoke(app, ["train", "broken", "--epochs", "1"])
    assert broken.exit_code == 2
    assert broken.stderr.strip().count("\n") == 0 and "failed to import" in broken.stderr


def test_plugin_options_are_cli_options_and_config_keys(tmp_path, toy_plugin):
    import yaml

    help_text = runner.invoke(app, ["train", "toy", "--help"], env={"COLUMNS": "200"}).output
    assert "--width" in help_text and "--spread" in help_text and "--backend" not in help_text
    base = ["train", "toy", "--epochs", "1", "--quiet"]
    result = runner.invoke(app, [*base, "--out", str(tmp_path / "a"), "--width", "8",
                                 "--spread", "3.5"])  # fmt: skip
    assert result.exit_code == 0, result.output
    cfg = yaml.safe_load((tmp_path / "a" / "config.yaml").read_text())
    assert cfg["model"]["width"] == 8 and cfg["data"]["spread"] == 3.5
    # data.spread exists only through the option declaration: its default, and --set works
    result = runner.invoke(app, [*base, "--out", str(tmp_path / "b"), "--set", "data.spread=1.5"])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load((tmp_path / "b" / "config.yaml").read_text())["data"]["spread"] == 1.5
    result = runner.invoke(app, [*base, "--out", str(tmp_path / "c")])
    assert yaml.safe_load((tmp_path / "c" / "config.yaml").read_text())["data"]["spread"] == 2.0
    # another task rejects the plugin's option, naming the plugin
    other = runner.invoke(app, ["train", "graph", "--spread", "1"])
    assert other.exit_code == 2 and "option of task 'toy'" in other.stderr


def test_compare_sweep_and_rebuild(tmp_path, toy_plugin):
    out = tmp_path / "sweep"
    args = ["compare", "toy", "--acts", "gelu,dnrt", "--models", "mlp", "--seeds", "2"]
    args += ["--out", str(out), "--epochs", "1", "--export", str(tmp_path / "export")]
    args += ["--spread", "2.5"]  # the plugin's own option
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "| gelu" in result.output or "gelu |" in result.output
    assert "dnrt" in result.output
    assert (out / "table.md").exists() and (out / "table.csv").exists()
    exported = sorted(p.parent.name for p in (tmp_path / "export").rglob("summary.json"))
    assert exported == ["mlp__dnrt__s0", "mlp__dnrt__s1", "mlp__gelu__s0", "mlp__gelu__s1"]
    assert not list((tmp_path / "export").rglob("*.pt"))
    # a second call reuses the finished runs
    again = runner.invoke(app, args)
    assert again.exit_code == 0
    assert again.stderr.count("finished, skipped") == 4
    rebuilt = runner.invoke(app, ["compare", "toy", "--from", str(tmp_path / "export")])
    assert rebuilt.exit_code == 0
    assert rebuilt.stdout.strip() == (out / "table.md").read_text().strip()
    summary = json.loads((out / "mlp__dnrt__s1" / "summary.json").read_text())
    assert summary["seed"] == 1 and summary["mechanism"] == "dnrt"


def test_compare_placement_by_lambda_table(tmp_path, toy_plugin):
    """An ARR selection grid: one sweep per (placement, lambda), tabulated by those keys."""
    for lam in (1, 10):
        args = ["compare", "toy", "--acts", "dnrt", "--models", "mlp", "--epochs", "1"]
        args += ["--set", f"mech.arr_lambda={lam}", "--out", str(tmp_path / f"lam{lam}")]
        assert runner.invoke(app, args).exit_code == 0
    args = ["compare", "toy", "--from", str(tmp_path), "--rows", "arr_placement"]
    table = runner.invoke(app, [*args, "--cols", "arr_lambda", "--which", "best_val"])
    assert table.exit_code == 0, table.output
    assert "| arr_placement \\ arr_lambda | 1.0 | 10.0 |" in table.stdout
    assert "| sites |" in table.stdout  # the toy task gives explicit sites


def test_compare_takes_the_trials_from_the_preset(tmp_path, toy_plugin):
    preset = tmp_path / "toy_preset.yaml"
    preset.write_text("task: toy\ntrain:\n  epochs: 1\ntrials:\n  seed: [5, 6]\n")
    out = tmp_path / "sweep"
    args = ["compare", "toy", "--config", str(preset), "--acts", "gelu", "--models", "mlp"]
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    done = sorted(p.parent.name for p in out.rglob("summary.json"))
    assert done == ["mlp__gelu__t0", "mlp__gelu__t1"]
    seeds = [json.loads((out / d / "summary.json").read_text())["seed"] for d in done]
    assert seeds == [5, 6] and "n=2" in result.stdout
    first = runner.invoke(app, [*args, "--out", str(tmp_path / "one"), "--seeds", "1"])
    assert first.exit_code == 0, first.output
    assert [p.parent.name for p in (tmp_path / "one").rglob("summary.json")] == ["mlp__gelu__t0"]


def test_compare_needs_acts(tmp_path):
    result = runner.invoke(app, ["compare", "image", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "--acts and --models" in result.stderr


def test_profile_prints_table():
    result = runner.invoke(app, ["profile", "resnet18", "--repeats", "0", "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    for name in ("baseline", "raa", "dnrt", "dpa"):
        assert f"| {name} |" in result.output
    assert "; C kernels on" in result.output or "; C kernels off" in result.output


def test_plot_curves_and_responses(tmp_path, toy_plugin):
    for act in ("gelu", "dnrt"):
        r = runner.invoke(app, ["train", "image", "--act", act, "--model", "vit_tiny", "--quiet",
                                "--out", str(tmp_path / act), "--epochs", "1",
                                "--set", "train.max_steps_per_epoch=1",
                                "--set", "data.test_subset=40"])  # fmt: skip
        assert r.exit_code == 0, r.output
    png = tmp_path / "curves.png"
    result = runner.invoke(app, ["plot", "curves", str(tmp_path / "gelu"), str(tmp_path / "dnrt"),
                                 "--out", str(png)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert png.stat().st_size > 10_000
    png2 = tmp_path / "responses.png"
    runs = [str(tmp_path / "gelu"), str(tmp_path / "dnrt")]
    result = runner.invoke(app, ["plot", "responses", *runs, "--out", str(png2), "--samples", "40"])
    assert result.exit_code == 0, result.output
    assert png2.stat().st_size > 10_000
