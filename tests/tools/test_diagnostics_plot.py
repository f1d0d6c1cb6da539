"""dnrt plot diagnostics: one row per sweep folder of train.diagnostics runs."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from cli import app
from dnrt_core.engine import run
from dnrt_core.tools.diagnostics_plot import plot_diagnostics
from tests.toy_task import ToyTask

pytestmark = pytest.mark.usefixtures("one_thread")


def test_plot_diagnostics(tmp_path):
    for name, mech in (
        ("gelu", {"mech.act": "gelu"}),
        ("dnrt", {"mech.act": "raa", "mech.arr": True}),
    ):
        run(ToyTask(), {"train.epochs": 2, "train.diagnostics": True, **mech},
            tmp_path / "sweep" / name, quiet=True)  # fmt: skip
    run(ToyTask(), {"train.epochs": 1}, tmp_path / "plain" / "gelu", quiet=True)
    png = plot_diagnostics([tmp_path / "sweep", tmp_path / "sweep" / "dnrt"], tmp_path / "d.png")
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="no diagnostics logged"):
        plot_diagnostics([tmp_path / "plain"], tmp_path / "x.png")
    bad = CliRunner().invoke(app, ["plot", "diagnostics", str(tmp_path / "plain"), "--out",
                                   str(tmp_path / "y.png")])  # fmt: skip
    assert bad.exit_code == 2 and "train.diagnostics=true" in bad.output
    assert not (tmp_path / "y.png").exists()
