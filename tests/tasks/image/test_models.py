"""The image model zoo: shapes, sizes, ARR sites, and one training step of every
model under every response mechanism, with ARR on and off."""

from __future__ import annotations

import copy
import functools

import pytest
import torch
import torch.nn.functional as F
from timm.models import tnt as timm_tnt
from torch import nn

import dnrt_core
from dnrt_core.mechanisms.raa import RAA
from dnrt_core.tuning.sites import cnn_feature_site, infer_num_classes
from tasks.image.models import IMAGE_MODELS, available_models, create_image_model

pytestmark = pytest.mark.usefixtures("one_thread")

MODELS = available_models()
ACTS = dnrt_core.available_activations()  # includes "dpa" (TAU + DPA memories in tune)
K = 10

#: (low, high) parameter counts in millions at 32 px, 10 classes
PARAMS_M = {
    "vit_tiny": (5.3, 5.45),  # ViT-Tiny ~5.4M
    "deit_tiny": (5.3, 5.45),
    "cait_xxs": (11.3, 12.0),
    "pvt_tiny": (2.8, 3.5),  # pvt_v2_b0 (3.4M with its sr convs, 2.9M with sr ratio 1)
    "tnt_s": (22.5, 24.0),
    "resnet18": (11.1, 11.25),  # CIFAR ResNet-18 ~11.17M
    "alexnet": (22.5, 24.0),
    "vgg11": (9.1, 9.4),
    "mobilenet": (2.1, 2.4),
    "shufflenet": (1.2, 1.35),
}


def _blocks(prefix: str, n: int) -> list[str]:
    return [f"{prefix}.{i}" for i in range(n)]


#: tune's default ARR sites and family per model
EXPECTED_SITES = {
    "vit_tiny": ("vit", _blocks("blocks", 12)),
    "deit_tiny": ("vit", _blocks("blocks", 12)),
    "cait_xxs": ("vit", _blocks("blocks", 24)),
    "pvt_tiny": ("vit", [f"stages.{s}.blocks.{b}" for s in range(4) for b in range(2)]),
    "tnt_s": ("vit", _blocks("blocks", 12)),
    "resnet18": ("cnn", ["layer4"]),
    "alexnet": ("cnn", ["features"]),
    "vgg11": ("cnn", ["features"]),
    "mobilenet": ("cnn", ["features"]),
    "shufflenet": ("cnn", ["conv5"]),
}


def _images(n: int = 2, size: int = 32, chans: int = 3) -> torch.Tensor:
    return torch.randn(n, chans, size, size, generator=torch.Generator().manual_seed(0))


def _count_m(model: nn.Module) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


@functools.cache
def _pristine(name: str) -> nn.Module:
    """Built once per model; tests tune deep copies (tune modifies a model in place)."""
    torch.manual_seed(0)
    return create_image_model(name, num_classes=K)


def test_registry_lists_the_paper_models():
    assert set(MODELS) == set(PARAMS_M) == set(EXPECTED_SITES)
    assert MODELS == sorted(MODELS)
    assert {IMAGE_MODELS[n].kind for n in MODELS} == {"transformer", "cnn"}


def test_unknown_model_names_the_valid_ones_and_closest():
    with pytest.raises(ValueError, match=r"did you mean 'vit_tiny'.*valid: .*resnet18"):
        create_image_model("vit_tiyn", num_classes=K)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("vit_tiny", {"num_classes": 0}),
        ("vit_tiny", {"num_classes": K, "img_size": 8}),  # below the smallest size, 16
        ("pvt_tiny", {"num_classes": K, "img_size": 16}),  # PVT and VGG need 32
        ("vgg11", {"num_classes": K, "img_size": 16}),
        ("pvt_tiny", {"num_classes": K, "img_size": 36}),  # not a multiple of PVT's 32
        ("vit_tiny", {"num_classes": K, "img_size": 18}),  # not a multiple of patch 4
        ("vit_tiny", {"num_classes": K, "in_chans": 0}),
        ("vit_tiny", {"num_classes": K, "drop_path": 1.0}),
    ],
)
def test_bad_arguments_raise(name, kwargs):
    with pytest.raises(ValueError):
        create_image_model(name, **kwargs)


def test_vit_at_16px_has_16_patches():
    """The embedded digits demo's size: 4x4 patches of 4 px, plus the class token."""
    model = create_image_model("vit_tiny", num_classes=K, img_size=16)
    assert model.patch_embed.num_patches == 16
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 3, 16, 16)).shape == (2, K)


def test_names_ignore_case_and_dashes():
    model = create_image_model("ShuffleNet", num_classes=3)
    assert model.num_classes == 3


@pytest.mark.parametrize("name", MODELS)
def test_shape_size_num_classes_and_feature_site(name):
    model = _pristine(name)
    low, high = PARAMS_M[name]
    assert low <= _count_m(model) <= high, f"{name}: {_count_m(model):.3f}M params"
    assert model.num_classes == K and infer_num_classes(model) == K
    model.eval()
    with torch.no_grad():
        assert model(_images()).shape == (2, K)
    family, sites = EXPECTED_SITES[name]
    if family == "cnn":
        assert cnn_feature_site(model) == sites[0]


@pytest.mark.parametrize("name", MODELS)
def test_tune_report_sites(name):
    model = copy.deepcopy(_pristine(name))
    tuned = dnrt_core.tune(model, act="raa", arr=True, num_classes=K)
    family, sites = EXPECTED_SITES[name]
    assert tuned.report.family == family
    assert tuned.report.arr_sites == sites
    assert len(tuned.report.replaced) > 0
    assert all(isinstance(model.get_submodule(n), RAA) for n in tuned.report.replaced)
    # the ARR site of a CNN is its last feature stage (4-D map), never the classifier
    if family == "cnn":
        assert any(isinstance(m, nn.Conv2d) for m in model.get_submodule(sites[0]).modules())


@pytest.mark.parametrize("name", MODELS)
def test_dpa_sites_exist(name):
    tuned = dnrt_core.tune(copy.deepcopy(_pristine(name)), act="dpa", num_classes=K)
    assert tuned.report.dpa_sites
    if EXPECTED_SITES[name][0] == "cnn":  # the DPA paper: the last CNN block only
        last = EXPECTED_SITES[name][1][0]
        assert all(s.startswith(last + ".") for s in tuned.report.dpa_sites)


@pytest.mark.parametrize("arr", [False, True], ids=["noarr", "arr"])
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("name", MODELS)
def test_train_step_every_mechanism(name, act, arr):
    torch.manual_seed(0)
    model = copy.deepcopy(_pristine(name))
    tuned = dnrt_core.tune(model, act=act, arr=arr, num_classes=K)
    tuned.train()
    x, y = _images(), torch.tensor([3, 3])  # one class twice: ARR's loss is > 0
    out = tuned(x, targets=y)
    assert out.shape == (2, K)
    assert len(tuned.report.replaced) > 0
    assert tuned.report.per_call == {}  # every activation site has its own module
    aux = tuned.aux_loss()
    loss = F.cross_entropy(out, y) + aux
    assert torch.isfinite(loss)
    if arr:
        assert aux.item() > 0
    loss.backward()
    opt = torch.optim.AdamW(tuned.parameters(), lr=1e-3)  # after the lazy shapes are known
    before = [p.detach().clone() for p in tuned.parameters()]
    opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, tuned.parameters(), strict=True))
    assert all(torch.isfinite(p).all() for p in tuned.parameters())


_DEFAULT_ACTS = (nn.ReLU, nn.ReLU6, nn.GELU)


@pytest.mark.parametrize("name", MODELS)
def test_act_layer_replaces_every_activation(name):
    model = create_image_model(name, num_classes=K, act_layer=nn.SiLU)
    acts = [m for m in model.modules() if isinstance(m, (*_DEFAULT_ACTS, nn.SiLU))]
    assert acts and all(type(m) is nn.SiLU for m in acts)
    assert len({id(m) for m in acts}) == len(acts)  # one instance per site
    model.eval()
    with torch.no_grad():
        assert model(_images(1)).shape == (1, K)


@pytest.mark.parametrize("name", MODELS)
def test_in_chans(name):
    model = create_image_model(name, num_classes=K, in_chans=1)
    model.eval()
    with torch.no_grad():
        assert model(_images(1, chans=1)).shape == (1, K)


def test_small_image_configurations():
    vit = _pristine("vit_tiny")
    assert vit.patch_embed.patch_size == (4, 4) and vit.patch_embed.num_patches == 64
    assert vit.blocks[-1].drop_path1.drop_prob == pytest.approx(0.1)
    tnt = _pristine("tnt_s")
    assert tnt.pixel_embed.new_patch_size == [4, 4] and tnt.num_patches == 64
    pvt = _pristine("pvt_tiny")
    assert all(blk.attn.sr is None for stage in pvt.stages for blk in stage.blocks)
    resnet = _pristine("resnet18")
    assert resnet.conv1.stride == (1, 1) and isinstance(resnet.maxpool, nn.Identity)
    shuffle = _pristine("shufflenet")
    assert shuffle.conv1[0].stride == (1, 1) and isinstance(shuffle.maxpool, nn.Identity)
    # final feature maps of a 32 px image
    x = _images(1)
    with torch.no_grad():
        assert resnet.eval().forward_features(x).shape[-1] == 4
        assert _pristine("mobilenet").eval().features(x).shape[-1] == 4
        assert _pristine("alexnet").eval().features(x).shape[-1] == 2


def test_no_drop_path_when_zero():
    vit = create_image_model("vit_tiny", num_classes=K, drop_path=0.0)
    assert all(isinstance(b.drop_path1, nn.Identity) for b in vit.blocks)


def test_tnt_blocks_pass_patch_tokens_first():
    model = _pristine("tnt_s").eval()
    x = _images()
    seen = {}
    model.blocks[0].register_forward_hook(lambda m, i, o: seen.setdefault("out", o))
    model.blocks[0].mlp_in.act.act.register_forward_pre_hook(lambda m, i: seen.setdefault("act", i))
    with torch.no_grad():
        model(x)
    patch, pixel = seen["out"]
    assert patch.shape == (2, 65, 384)  # class token + 8x8 patches
    assert pixel.shape == (2 * 64, 16, 24)  # 4x4 inner pixels per patch
    assert seen["act"][0].shape[0] == 2  # the inner activation sees one row per image
    assert isinstance(model, timm_tnt.TNT)


@pytest.mark.parametrize("name", MODELS)
def test_native_224_configuration(name):
    model = create_image_model(name, num_classes=K, img_size=224)
    assert model.num_classes == K
    if name in ("vit_tiny", "deit_tiny", "cait_xxs"):
        assert model.patch_embed.patch_size == (16, 16)
    if name == "tnt_s":
        assert model.num_patches == 196 and model.pixel_embed.new_patch_size == [4, 4]
    if name == "resnet18":
        assert model.conv1.stride == (2, 2) and isinstance(model.maxpool, nn.MaxPool2d)
    model.eval()
    with torch.no_grad():
        assert model(_images(1, size=224)).shape == (1, K)


RESNET18_BLOCKS = [f"layer{s}.{b}" for s in range(1, 5) for b in range(2)]


@pytest.mark.parametrize(
    ("placement", "sites"),
    [
        (None, ["layer4"]),
        ("last_stage", ["layer4"]),
        ("every_stage", ["layer1", "layer2", "layer3", "layer4"]),
        ("every_block", RESNET18_BLOCKS),
        ("last_stage_pre", ["layer4.1.act2:in"]),
        ("every_stage_pre", [f"layer{s}.1.act2:in" for s in range(1, 5)]),
        ("every_block_pre", [f"{b}.act2:in" for b in RESNET18_BLOCKS]),
    ],
)
def test_resnet18_arr_placements(placement, sites):
    """Each ARR placement of the CNN family on ResNet-18: its sites, J memories, and the loss
    averaged over the J sites; a ``:in`` site sees the pooled input of the block's final ReLU
    (the residual sum), the others its non-negative output."""
    torch.manual_seed(0)
    model = create_image_model("resnet18", num_classes=K, img_size=32)
    seen = {}
    for name, m in model.named_modules():
        if name.endswith("act2"):
            m.register_forward_pre_hook(lambda _m, i, n=name: seen.update({n: i[0].mean((2, 3))}))
    tuned = dnrt_core.tune(model, arr={"placement": placement, "arr_lambda": 2.0})
    assert tuned.report.arr_sites == sites and len(tuned.arr) == len(sites)
    assert tuned.report.arr_placement == (placement or "last_stage")
    x, y = torch.randn(8, 3, 32, 32), torch.arange(8) % K
    tuned.train()
    tuned(x, targets=y)
    losses = torch.stack(tuned._arr_losses)
    assert len(losses) == len(sites)
    assert torch.allclose(tuned.aux_loss(), 2.0 * losses.mean())
    for key, site in tuned._arr_sites.items():
        response = tuned._arr_responses[key]
        if site.endswith(":in"):
            assert torch.allclose(response, seen[site[: -len(":in")]])
        else:
            assert response.shape[1] in (64, 128, 256, 512) and bool((response >= 0).all())
