"""Entry-point discovery: built-in tasks, a third-party plugin, a plugin that fails to import."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from cli import app
from dnrt_core.engine.plugins import PluginError, discover, load_task


def test_builtin_tasks_are_entry_points():
    tasks = discover()
    for name in ("image", "graph", "longtail"):
        assert name in tasks
        assert tasks[name].source.startswith("dnrt ")
    assert load_task("image").name == "image"


def test_unknown_task_suggests_closest():
    with pytest.raises(PluginError, match="did you mean 'image'"):
        load_task("imag")


def test_toy_plugin_task_listed_and_trains(toy_plugin, tmp_path):
    runner = CliRunner()
    listing = runner.invoke(app, ["tasks"])
    assert listing.exit_code == 0, listing.output
    assert "toy" in listing.output and "gaussian blobs" in listing.output
    assert "toy-plugin 0.1" in listing.output
    # the broken plugin is reported in one line and the others keep working
    assert "broken" in listing.output
    assert "failed to import" in listing.output
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "toy", "--epochs", "1", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert (out / "summary.json").exists()


def test_broken_plugin_one_line_error(toy_plugin):
    result = CliRunner().invoke(app, ["train", "broken"])
    assert result.exit_code == 2
    lines = [ln for ln in result.output.strip().splitlines() if ln]
    assert len(lines) == 1 and "failed to import" in lines[0]
    assert "Traceback" not in result.output
