"""Entry-point discovery: built-in tasks, a third-party plugin, a plugin that fails to import."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from dnrt_core.plugins import PluginError, discover, load_task

HERE = Path(__file__).resolve().parent


@pytest.fixture
def third_party(tmp_path, monkeypatch):
    """A plugin distribution on sys.path: ``toy`` (works) and ``broken`` (import fails)."""
    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(HERE / "toy_task.py", site / "toy_plugin.py")
    dist = site / "toy_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[dnrt.tasks]\ntoy = toy_plugin:ToyTask\nbroken = no_such_module_xyz:Task\n"
    )
    monkeypatch.syspath_prepend(str(site))
    yield site
    sys.modules.pop("toy_plugin", None)


def test_builtin_tasks_are_entry_points():
    tasks = discover()
    for name in ("image", "graph", "longtail"):
        assert name in tasks
        assert tasks[name].source.startswith("dnrt ")
    assert load_task("image").name == "image"


def test_unknown_task_suggests_closest():
    with pytest.raises(PluginError, match="did you mean 'image'"):
        load_task("imag")


def test_third_party_task_listed_and_trains(third_party, tmp_path):
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


def test_broken_plugin_one_line_error(third_party):
    result = CliRunner().invoke(app, ["train", "broken"])
    assert result.exit_code == 2
    lines = [ln for ln in result.output.strip().splitlines() if ln]
    assert len(lines) == 1 and "failed to import" in lines[0]
    assert "Traceback" not in result.output
