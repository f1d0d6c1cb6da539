"""Hugging Face transformers models: activations, families, default sites and ModelOutput
responses; tiny configurations built locally (nothing is downloaded), one training step
each with RAA + ARR and with DPA."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from dnrt_core import ARR, RAA, tune
from dnrt_core.mechanisms.pooling import aggregate, hidden_state
from dnrt_core.tuning import detect_family, is_activation
from tests.tuning.helpers import count_modules

NUM_LABELS = 4
IMAGE = {"image_size": 32, "patch_size": 8, "hidden_size": 32, "num_hidden_layers": 2,
         "num_attention_heads": 2, "intermediate_size": 64, "num_labels": NUM_LABELS}  # fmt: skip
TEXT = {"vocab_size": 100, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
        "intermediate_size": 64, "num_labels": NUM_LABELS,
        "max_position_embeddings": 32}  # fmt: skip
SWIN = {"image_size": 32, "patch_size": 4, "embed_dim": 16, "depths": [1, 2],
        "num_heads": [1, 2], "window_size": 4, "num_labels": NUM_LABELS}  # fmt: skip

#: model -> (config class, model class, config keywords, family, pool, number of ARR sites)
MODELS = {
    "vit": ("ViTConfig", "ViTForImageClassification", IMAGE, "vit", "token", 2),
    "deit": ("DeiTConfig", "DeiTForImageClassification", IMAGE, "vit", "token", 2),
    "swin": ("SwinConfig", "SwinForImageClassification", SWIN, "vit", "mean", 3),
    "bert": ("BertConfig", "BertForSequenceClassification", TEXT, "text", "token", 2),
    "roberta": ("RobertaConfig", "RobertaForSequenceClassification", TEXT, "text", "token", 2),
}


def build(transformers, key: str):
    config_cls, model_cls, kwargs, *_ = MODELS[key]
    torch.manual_seed(0)
    config = getattr(transformers, config_cls)(**kwargs)
    return getattr(transformers, model_cls)(config)


def inputs(key: str, batch: int = 8) -> tuple[tuple, dict]:
    gen = torch.Generator().manual_seed(1)
    if MODELS[key][3] == "text":
        ids = torch.randint(3, 100, (batch, 9), generator=gen)
        mask = torch.ones_like(ids)
        mask[0, -3:] = 0  # padding in one sequence
        return (ids,), {"attention_mask": mask}
    return (torch.randn(batch, 3, 32, 32, generator=gen),), {}


def train_step(tuned, args, kwargs, labels) -> tuple[torch.Tensor, torch.Tensor]:
    opt = torch.optim.SGD(tuned.parameters(), lr=0.1)
    tuned.train()
    out = tuned(*args, targets=labels, **kwargs)
    task_loss = F.cross_entropy(out.logits, labels)
    aux = tuned.aux_loss()
    (task_loss + aux).backward()
    opt.step()
    return task_loss.detach(), aux.detach()


@pytest.mark.parametrize("key", list(MODELS))
def test_family_and_sites(transformers, one_thread, key):
    model = build(transformers, key)
    n_acts = sum(type(m).__name__ == "GELUActivation" for m in model.modules())
    assert n_acts > 0
    family, pool, n_sites = MODELS[key][3:]
    assert detect_family(model) == family
    tuned = tune(model, act="raa", arr=True)
    assert tuned.report.family == family
    assert len(tuned.report.replaced) == n_acts  # every MLP activation, nothing else
    assert count_modules(model, RAA) == n_acts
    assert len(tuned.report.arr_sites) == n_sites == count_modules(tuned, ARR)
    for name in tuned.report.arr_sites:  # whole transformer layers
        assert "Layer" in type(model.get_submodule(name)).__name__
    assert tuned.arr_spec is not None and tuned.arr_spec.pool is None  # default: the family's
    tuned.eval()
    args, kwargs = inputs(key, 2)
    with torch.no_grad():
        assert tuned(*args, **kwargs).logits.shape == (2, NUM_LABELS)
    if pool == "token":  # the class token of each layer, checked on the site's output
        site = model.get_submodule(tuned.report.arr_sites[0])
        seen = []
        handle = site.register_forward_hook(lambda m, i, o: seen.append(hidden_state(o)))
        with torch.no_grad():
            tuned(*args, **kwargs)
        handle.remove()
        assert torch.equal(aggregate(seen[0], "token"), seen[0][:, 0])


@pytest.mark.parametrize("key", list(MODELS))
def test_raa_arr_training_step(transformers, one_thread, key):
    tuned = tune(build(transformers, key), act="raa", arr=True)
    args, kwargs = inputs(key)
    labels = torch.arange(8) % NUM_LABELS  # two samples per class: ARR's loss is non-zero
    tuned.materialize(*args, **kwargs)
    before = [m.weight.detach().clone() for m in tuned.modules() if isinstance(m, RAA)]
    task_loss, aux = train_step(tuned, args, kwargs, labels)
    assert torch.isfinite(task_loss) and float(aux) > 0.0
    after = [m.weight.detach() for m in tuned.modules() if isinstance(m, RAA)]
    assert all(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
    for key_, arr in tuned.arr.items():
        site = tuned._arr_sites[key_]  # Swin: stage 0 is 16 wide (swin.encoder.layers.0....)
        width = 16 if key == "swin" and site.split(".")[3] == "0" else 32
        assert arr.memory.shape == (NUM_LABELS, width)
        assert bool(arr.initialized.all())


@pytest.mark.parametrize("key", list(MODELS))
def test_dpa_training_steps(transformers, one_thread, key):
    tuned = tune(build(transformers, key), act="dpa", dpa={"interval": 1})
    dpas = tuned.dpa_modules()
    assert len(dpas) == len(tuned.report.dpa_sites) > 0
    family, pool = MODELS[key][3:5]
    assert all(d.pool == pool for d in dpas)
    args, kwargs = inputs(key)
    labels = torch.arange(8) % NUM_LABELS
    tuned.materialize(*args, **kwargs)
    for _ in range(3):  # memories fill on step 1; the channel loss then applies
        task_loss, _aux = train_step(tuned, args, kwargs, labels)
        assert torch.isfinite(task_loss)
    for d in dpas:
        for memory in (d.forward_memory, d.backward_memory):  # zero-initialised, every class seen
            assert bool((memory != 0).any(dim=1).all())
        assert d.last_loss is not None and torch.isfinite(d.last_loss)


def test_act2fn_activations_are_recognised(transformers):
    from transformers.activations import ACT2CLS, ACT2FN

    swapped = {"gelu", "gelu_new", "gelu_fast", "quick_gelu", "gelu_pytorch_tanh", "gelu_python",
               "gelu_accurate", "gelu_10", "mish", "silu", "swish", "relu", "relu2", "relu6",
               "leaky_relu", "hardswish"}  # fmt: skip
    kept = {"sigmoid", "tanh", "linear"}  # gates and the identity
    for name in sorted(set(ACT2CLS) & (swapped | kept)):
        assert is_activation(ACT2FN[name]) == (name in swapped), name


def test_hidden_state_of_model_outputs(transformers):
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    h = torch.randn(2, 5, 3)
    out = BaseModelOutputWithPooling(last_hidden_state=h, pooler_output=torch.randn(2, 3))
    assert hidden_state(out) is h
    assert hidden_state((None, out)) is h and hidden_state((h, None)) is h
    assert hidden_state(BaseModelOutputWithPooling(pooler_output=h[:, 0])) is not None
    assert torch.equal(aggregate(out, "mean"), h.mean(1))
    with pytest.raises(TypeError, match="no tensor"):
        hidden_state((None, None))


def test_arr_at_a_model_output_site(transformers, one_thread):
    """An explicit site whose output is a ModelOutput (the whole ViT backbone)."""
    tuned = tune(build(transformers, "vit"), act="raa", arr={"sites": "vit", "pool": "token"})
    args, _ = inputs("vit")
    labels = torch.arange(8) % NUM_LABELS
    tuned.materialize(*args)
    _, aux = train_step(tuned, args, {}, labels)
    assert float(aux) > 0.0 and tuned.arr["vit"].memory.shape == (NUM_LABELS, 32)


def test_tuned_vit_exports(transformers, onnx_tools, one_thread, tmp_path):
    """torch.export and the TorchScript ONNX exporter (the dynamo one: tests/tools)."""
    from dnrt_core.tools.export import export_onnx, export_program, max_difference

    args, _ = inputs("vit", 2)
    tuned = tune(build(transformers, "vit"), act="raa", arr=True, example_inputs=args)
    with torch.no_grad():
        for m in tuned.modules():
            if isinstance(m, RAA):
                m.weight.normal_(0.0, 0.1)
    assert max_difference(tuned, export_program(tuned, args), args) < 1e-5
    path = export_onnx(tuned, args, tmp_path / "vit.onnx", dynamo=False)
    assert max_difference(tuned, path, inputs("vit", 3)[0]) < 1e-5


def test_dnrt_core_does_not_import_transformers():
    code = (
        "import sys, torch, dnrt_core\n"
        "from dnrt_core import tune\n"
        "m = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.GELU(), torch.nn.Linear(8, 3))\n"
        "tune(m, act='raa', arr={'sites': '1', 'pool': 'node'})\n"
        "assert 'transformers' not in sys.modules, 'transformers imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_hf_resnet_cnn_family_arr_on_the_backbone_output(transformers, one_thread):
    """A convolutional HF model is a ``cnn``: ARR at the backbone, whose ModelOutput's
    last_hidden_state (B, C, H, W) is average-pooled."""
    config = transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                                       num_labels=NUM_LABELS)  # fmt: skip
    tuned = tune(transformers.ResNetForImageClassification(config), act="raa", arr=True)
    assert tuned.report.family == "cnn" and tuned.report.arr_sites == ["resnet"]
    assert len(tuned.report.replaced) == count_modules(tuned, RAA) > 0
    args, _ = inputs("vit")
    tuned.materialize(*args)
    _, aux = train_step(tuned, args, {}, torch.arange(8) % NUM_LABELS)
    assert float(aux) > 0.0 and tuned.arr["resnet"].memory.shape == (NUM_LABELS, 16)


def test_causal_text_models_are_not_encoders(transformers):
    config = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=100,
                                     n_positions=32, num_labels=NUM_LABELS)  # fmt: skip
    model = transformers.GPT2ForSequenceClassification(config)
    assert detect_family(model) == "generic"  # it classifies from the last token: give sites
    assert len(tune(model, act="raa").report.replaced) == 2  # NewGELUActivation, per layer
