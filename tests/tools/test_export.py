"""Export of tuned models: torch.export programs and ONNX files (dynamo and TorchScript
exporters, run in onnxruntime) match the eager model; ``dnrt export`` writes them from a run."""

from __future__ import annotations

import sys

import pytest
import torch
from typer.testing import CliRunner

from cli import app
from dnrt_core import RAA, tune
from dnrt_core.tools.export import (
    export_onnx,
    export_program,
    export_run,
    max_difference,
)
from tasks.image.models import create_image_model

TOL = 1e-5
MECHANISMS = {"raa": {"act": "raa"}, "dnrt": {"act": "raa", "arr": True}, "dpa": {"act": "dpa"}}
runner = CliRunner()


def _image_model(name: str) -> torch.nn.Module:
    model = create_image_model(name, num_classes=10, img_size=32)
    if name == "vit_tiny":  # ViT-Tiny's width, heads and class token; 2 of its 12 (equal) blocks
        model.blocks = model.blocks[:2]
    return model


@pytest.fixture(scope="module")
def tuned_models(one_thread):
    """(model name, mechanism) -> a materialised tuned model in eval mode with non-zero RAA
    parameters (at their zero init RAA is its base GELU and the shift would go untested)."""
    cache: dict = {}

    def get(name: str, mech: str):
        if (name, mech) not in cache:
            torch.manual_seed(0)
            x = torch.randn(2, 3, 32, 32)
            tuned = tune(_image_model(name), **MECHANISMS[mech], example_inputs=(x,))
            with torch.no_grad():
                for m in tuned.modules():
                    if isinstance(m, RAA):
                        m.weight.normal_(0.0, 0.05)
                        m.bias.fill_(0.1)
            cache[name, mech] = tuned.eval()
        return cache[name, mech]

    return get


def _inputs(batch: int) -> tuple[torch.Tensor]:
    return (torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(batch)),)


CASES = [(n, m) for n in ("vit_tiny", "resnet18") for m in MECHANISMS]
IDS = [f"{n}-{m}" for n, m in CASES]
#: in eval mode DNRT's graph is RAA's (ARR is inactive): the slower exports check ResNet-18's
#: RAA through its DNRT model
EXPORT_CASES = [c for c in CASES if c != ("resnet18", "raa")]


@pytest.mark.parametrize(("name", "mech"), EXPORT_CASES, ids=[f"{n}-{m}" for n, m in EXPORT_CASES])
def test_torch_export_matches_eager(tuned_models, name, mech):
    model = tuned_models(name, mech)
    program = export_program(model, _inputs(2))
    ops = {str(node.target) for node in program.graph.nodes}
    if mech != "dpa":  # RAA is recorded as its functional form, not as the fused Function
        assert any("erf" in op for op in ops), sorted(ops)
    for batch in (2, 3):  # the batch dimension stays dynamic
        assert max_difference(model, program, _inputs(batch)) < TOL


#: the slowest exporter: ResNet-18 once
DYNAMO_CASES = [*CASES[:3], pytest.param("resnet18", "dnrt", marks=pytest.mark.slow)]


@pytest.mark.parametrize(("name", "mech"), DYNAMO_CASES, ids=[*IDS[:3], "resnet18-dnrt"])
def test_onnx_dynamo_export_runs_in_onnxruntime(tuned_models, onnx_tools, tmp_path, name, mech):
    """The dynamo exporter without its graph optimiser (the export command test runs it)."""
    model = tuned_models(name, mech)
    path = export_onnx(model, _inputs(2), tmp_path / "model.onnx", optimize=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # weights inside
    for batch in (2, 3):
        assert max_difference(model, path, _inputs(batch)) < TOL


@pytest.mark.parametrize(("name", "mech"), CASES, ids=IDS)
def test_onnx_torchscript_export_runs_in_onnxruntime(
    tuned_models, onnx_tools, tmp_path, name, mech
):
    model = tuned_models(name, mech)
    path = export_onnx(model, _inputs(2), tmp_path / "model.onnx", dynamo=False)
    for batch in (2, 3):
        assert max_difference(model, path, _inputs(batch)) < TOL


def test_plain_torch_onnx_export_of_a_tuned_model(tuned_models, onnx_tools, tmp_path):
    """What a user types, without the helpers: torch.onnx.export(tuned.eval(), (x,), f)."""
    model = tuned_models("vit_tiny", "dnrt")
    x = _inputs(2)
    torch.onnx.export(model, x, tmp_path / "ts.onnx", dynamo=False)
    assert max_difference(model, tmp_path / "ts.onnx", x) < TOL


def test_eager_forward_still_uses_the_fused_function(tuned_models):
    act = tuned_models("vit_tiny", "raa").model.blocks[0].mlp.act
    out = act(torch.randn(2, 5, 768, requires_grad=True))
    assert type(out.grad_fn).__name__ == "RAAFunctionBackward"


def test_plain_module_exports_with_a_dynamic_batch(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), RAA(6), torch.nn.Linear(6, 2))
    with torch.no_grad():
        model[1].weight.normal_()
    program = export_program(model, (torch.randn(2, 4),))
    assert max_difference(model, program, (torch.randn(5, 4),)) < TOL


def test_onnx_rejects_sparse_inputs(tmp_path):
    adj = torch.eye(3).to_sparse_csr()
    with pytest.raises(ValueError, match="sparse_csr"):
        export_onnx(torch.nn.Identity(), (adj,), tmp_path / "g.onnx")


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """A one-epoch DNRT run of the toy task, its plugin registered (load_run finds the task
    named in the checkpoint through the entry points) for the tests of this module."""
    from dnrt_core.engine import run
    from tests.conftest import make_toy_plugin

    where = tmp_path_factory.mktemp("toy")
    site = str(make_toy_plugin(where))
    sys.path.insert(0, site)
    try:
        from toy_plugin import ToyTask

        run(ToyTask(), {"mech.act": "raa", "mech.arr": True, "train.epochs": 1},
            where / "run", quiet=True)  # fmt: skip
        yield where / "run"
    finally:
        sys.path.remove(site)
        sys.modules.pop("toy_plugin", None)


def test_export_run_writes_a_program_beside_the_checkpoint(toy_run):
    path, diff = export_run(toy_run / "best.pt", "pt2")  # ONNX: test_export_command
    assert path == toy_run / "best.pt2" and path.is_file() and diff < TOL
    program = torch.export.load(str(path))  # runs without dnrt's modules
    assert not any("dnrt" in str(node.target) for node in program.graph.nodes)


def test_export_command(toy_run, onnx_tools, tmp_path):
    out = tmp_path / "model.onnx"
    result = runner.invoke(app, ["export", str(toy_run / "best.pt"), "--format", "onnx",
                                 "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert out.is_file() and str(out) in result.output and "max |diff|" in result.output
    bad = runner.invoke(app, ["export", str(toy_run / "best.pt"), "--format", "tflite"])
    assert bad.exit_code == 2 and "unknown export format 'tflite'" in bad.output
    missing = runner.invoke(app, ["export", str(tmp_path / "none.pt")])
    assert missing.exit_code == 2 and missing.output.startswith("error:")
