"""Every command ends a failure in one line on stderr (exit 2 bad input, 1 environment),
a traceback only with --debug; run in-process on the toy plugin and tiny data."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from cli import app


def _invoke(args: list[str]):
    return CliRunner().invoke(app, [str(a) for a in args])


def _one_line(result, pattern: str, code: int = 2) -> str:
    assert result.exit_code == code, result.output
    err = result.stderr.strip().splitlines()
    assert len(err) == 1, result.stderr
    assert err[0].startswith("error: ") and pattern in err[0], err[0]
    assert "Traceback" not in result.output
    return err[0]


@pytest.fixture
def toy_run(tmp_path, toy_plugin):
    out = tmp_path / "toyrun"
    result = _invoke(["train", "toy", "--epochs", "2", "--out", out, "--quiet",
                      "--set", "train.stop_after_epoch=1"])  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


def test_debug_shows_the_traceback(tmp_path, toy_plugin):
    args = ["train", "toy", "--set", "train.epochs=1.5", "--out", tmp_path / "r"]
    _one_line(_invoke(args), "train.epochs must be a positive integer, got 1.5")
    result = _invoke(["--debug", *args])
    assert result.exit_code != 0
    assert type(result.exception).__name__ == "ConfigError"
    _one_line(_invoke(args), "train.epochs must be")  # --debug does not stick


CASES = {
    "empty --out": (["train", "toy", "--out", ""], "--out is empty"),
    "--device meta": (["train", "toy", "--device", "meta", "--out", "{tmp}/r"], "unknown device"),
    "--device cuda:7": (["train", "toy", "--device", "cuda:7", "--out", "{tmp}/r"], "cuda:7"),
    "--arr-lambda nan": (
        ["train", "toy", "--act", "dnrt", "--arr-lambda", "nan", "--out", "{tmp}/r"],
        "mech.arr_lambda must be a number >= 0, got nan",
    ),
    "train.amp=bogus": (
        ["train", "toy", "--set", "train.amp=bogus", "--out", "{tmp}/r"],
        "train.amp must be one of auto, true, false",
    ),
    "epochs true": (["train", "toy", "--set", "train.epochs=true", "--out", "{tmp}/r"], "got True"),
    "profile --device bogus": (["profile", "resnet18", "--device", "bogus"], "unknown device"),
    "profile --device meta": (["profile", "resnet18", "--device", "meta"], "unknown device"),
    "plot curves, no run": (["plot", "curves", "{tmp}/nope"], "no such run folder"),
    "plot, empty --out": (["plot", "curves", "{tmp}", "--out", ""], "--out is empty"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line(case, tmp_path, toy_plugin, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args, pattern = CASES[case]
    _one_line(_invoke([a.replace("{tmp}", str(tmp_path)) for a in args]), pattern)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]  # nothing written


def test_out_that_is_a_file_or_under_one(tmp_path, toy_plugin):
    (tmp_path / "f").write_text("keep")
    _one_line(_invoke(["train", "toy", "--out", tmp_path / "f"]), "is a file, not a folder")
    _one_line(_invoke(["train", "toy", "--out", tmp_path / "f" / "x"]), "cannot create output")
    assert (tmp_path / "f").read_text() == "keep"


def test_compare_into_a_file(tmp_path, toy_plugin):
    (tmp_path / "f").write_text("keep")
    args = ["compare", "toy", "--acts", "gelu", "--models", "mlp", "--out", tmp_path / "f"]
    _one_line(_invoke(args), "is a file, not a folder")


def test_resume_refuses_other_model_or_mechanism(toy_run):
    before = (toy_run / "last.pt").read_bytes()
    for extra, pattern in (
        (["--act", "dnrt"], "mech.act is None there, got 'raa'"),
        (["--lr", "0.5"], "train.lr is 0.01 there, got 0.5"),
        (["--set", "model.width=32"], "model.width is 16 there, got 32"),
    ):
        result = _invoke(["train", "toy", "--resume", "--out", toy_run, "--quiet", *extra])
        _one_line(result, pattern)
    assert (toy_run / "last.pt").read_bytes() == before
    result = _invoke(["train", "toy", "--resume", "--out", toy_run, "--quiet", "--epochs", "3"])
    assert result.exit_code == 0, result.output


def test_eval_takes_a_run_folder(toy_run, tmp_path):
    result = _invoke(["eval", toy_run, "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "top1=" in result.output
    _one_line(_invoke(["eval", tmp_path]), "holds no best.pt or last.pt")
    _one_line(_invoke(["eval", toy_run, "--device", "meta"]), "unknown device 'meta'")


def test_busy_run_folder_is_one_line(toy_run):
    from dnrt_core.engine import RunDir

    holder = RunDir(toy_run)
    holder.acquire()
    try:
        result = _invoke(["train", "toy", "--resume", "--out", toy_run, "--quiet"])
        _one_line(result, "is in use by another dnrt run")
    finally:
        holder.release()


def test_plot_out_folder_gets_the_default_name(toy_run, tmp_path):
    figures = tmp_path / "figs"
    figures.mkdir()
    result = _invoke(["plot", "curves", toy_run, "--out", figures])
    assert result.exit_code == 0, result.output
    assert (figures / "curves.png").is_file()
    result = _invoke(["plot", "responses", toy_run, "--out", f"{tmp_path}/new/", "--samples", "16"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "new" / "responses.png").is_file()
    assert not (tmp_path / "new.png").exists() and not (tmp_path / "figs.png").exists()


def test_plot_responses_of_a_graph_run(tmp_path):
    from dnrt_core.engine import run

    cfg = {"data.num_nodes": 1500, "train.epochs": 1, "device": "cpu"}
    run("graph", cfg, tmp_path / "g", quiet=True)
    result = _invoke(["plot", "responses", tmp_path / "g", "--out", tmp_path / "x.png"])
    _one_line(result, "is a 'graph' run")
