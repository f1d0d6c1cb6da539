"""The fused C kernels for RAA: equal to the float64 definition, forward and backward, on rows
and channel maps, every base, ragged widths, 1 and 2 threads, the AVX-512 and the portable
build; the cache; the tensor-op fallback when kernels are off or no compiler exists."""

from __future__ import annotations

import contextlib
import os
import platform
import warnings

import pytest
import torch

from dnrt_core.kernels import loader as cpu_kernels
from dnrt_core.mechanisms.raa import RAA, RAA_BASES, raa_reference
from dnrt_core.mechanisms.raa_fused import _kernel_backward, _kernel_forward


@pytest.fixture(scope="module")
def portable_library(c_compiler, tmp_path_factory):
    """A build without AVX-512 (the generic, compiler-vectorised loops)."""
    extra = ("-mno-avx512f",) if platform.machine().lower() in ("x86_64", "amd64") else ()
    path = cpu_kernels.build(c_compiler, extra, cache_dir=tmp_path_factory.mktemp("kernels"))
    return cpu_kernels.open_library(path)


# (shape, dim): rows with widths that are / are not multiples of 16, (B, T, d), channel maps
# with ragged and wide spatial sizes, and enough vectors to split over two threads
SHAPES = [
    ((7, 768), -1),
    ((33, 37), -1),
    ((3, 5, 9), -1),
    ((4, 5, 7, 5), 1),
    ((3, 20, 8, 8), 1),
    ((2, 3, 1, 1), 1),
]


def _reference(x, w, b, dim, base, g):
    """y and the gradients of sum(y·g) from the plain definition in float64."""
    x64 = x.double().requires_grad_(True)
    w64 = w.double().requires_grad_(True)
    b64 = b.double().requires_grad_(True)
    y = raa_reference(x64, w64, b64, dim, base)
    y.backward(g.double())
    return y.detach(), x64.grad, w64.grad, b64.grad


def _kernel(lib, x, w, b, dim, base, g):
    dim = dim % x.dim()
    x3 = x.reshape(x.shape[:dim].numel(), x.shape[dim], x.shape[dim + 1 :].numel()).contiguous()
    y3, s2 = _kernel_forward(lib, x3, w, b, base)
    gx3, gs2, gw = _kernel_backward(lib, x3, s2, g.reshape(x3.shape).contiguous(), w, base, True)
    return y3.view(x.shape), gx3.view(x.shape), gw, gs2.sum().reshape(1)


@contextlib.contextmanager
def _threads(n: int):
    """torch's intra-op thread count (the kernels' OpenMP team size) set to n inside."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _inputs(shape, dim, seed=0, scale=2.0):
    gen = torch.Generator().manual_seed(seed)
    d = shape[dim]
    x = torch.randn(*shape, generator=gen) * scale
    w = torch.randn(d, generator=gen) / d**0.5
    b = torch.randn(1, generator=gen)
    g = torch.randn(*shape, generator=gen)
    return x, w, b, g


def _check(got, ref):
    y, gx, gw, gb = got
    ry, rgx, rgw, rgb = ref
    torch.testing.assert_close(y.double(), ry, atol=2e-6, rtol=2e-6)
    torch.testing.assert_close(gx.double(), rgx, atol=1e-5, rtol=1e-5)
    # sums over every vector (with cancellation): compare norm-wise
    for got_sum, ref_sum in ((gw, rgw), (gb, rgb)):
        error = (got_sum.double() - ref_sum).norm()
        assert error <= 1e-5 * ref_sum.norm() + 1e-5, (error, ref_sum.norm())


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("base", RAA_BASES)
@pytest.mark.parametrize("shape,dim", SHAPES)
def test_kernel_equals_definition(cpu_kernel_library, shape, dim, base, threads):
    lib = cpu_kernel_library
    x, w, b, g = _inputs(shape, dim)
    with _threads(threads):
        got = _kernel(lib, x, w, b, dim, base, g)
    _check(got, _reference(x, w, b, dim, base, g))


@pytest.mark.parametrize("base", RAA_BASES)
@pytest.mark.parametrize("shape,dim", SHAPES)
def test_portable_build_equals_definition(portable_library, shape, dim, base):
    x, w, b, g = _inputs(shape, dim, seed=1)
    got = _kernel(portable_library, x, w, b, dim, base, g)
    _check(got, _reference(x, w, b, dim, base, g))


@pytest.mark.parametrize("base", RAA_BASES)
def test_far_tails_and_nan(cpu_kernel_library, base):
    """|z| up to 1e4: the exp range reduction saturates to exact 0 / 1 gates, never NaN/inf;
    a NaN input makes its vector NaN (its shift is NaN), as in the definition, and no other."""
    lib = cpu_kernel_library
    x = torch.tensor([[-1e4, -200.0, -60.0, -12.0, -3.0, 0.0, 3.0, 12.0, 60.0, 200.0, 1e4]])
    w, b = torch.zeros(x.shape[1]), torch.zeros(1)
    g = torch.ones_like(x)
    y, gx, _, _ = _kernel(lib, x, w, b, -1, base, g)
    ry, rgx, _, _ = _reference(x, w, b, -1, base, g)
    assert torch.isfinite(y).all() and torch.isfinite(gx).all()
    torch.testing.assert_close(y.double(), ry, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(gx.double(), rgx, atol=1e-6, rtol=1e-6)
    x_nan = torch.tensor([[1.0, float("nan"), -1.0], [1.0, 2.0, -1.0]])
    y, _, _, _ = _kernel(lib, x_nan, torch.zeros(3), b, -1, base, torch.ones(2, 3))
    assert torch.isnan(y[0]).all() and torch.isfinite(y[1]).all()


def test_two_threads_are_deterministic(cpu_kernel_library):
    lib = cpu_kernel_library
    x, w, b, g = _inputs((64, 9, 96), -1, seed=2)
    with _threads(2):
        first = _kernel(lib, x, w, b, -1, "gelu", g)
        second = _kernel(lib, x, w, b, -1, "gelu", g)
    for a, c in zip(first, second, strict=True):
        assert torch.equal(a, c)


def test_module_uses_the_kernel_for_float32(cpu_kernel_library, monkeypatch):
    """RAA's float32 CPU forward/backward go through the kernel; float64 does not."""
    calls = []
    real_load = cpu_kernels.load
    monkeypatch.setattr(cpu_kernels, "load", lambda: calls.append(1) or real_load())
    module = RAA(16)
    with torch.no_grad():
        module.weight.normal_()
    x = torch.randn(4, 16, requires_grad=True)
    module(x).sum().backward()
    assert calls and module.weight.grad is not None and x.grad is not None
    calls.clear()
    module.double()(torch.randn(4, 16, dtype=torch.float64))
    assert not calls


def test_disabled_kernels_fall_back_to_tensor_ops(monkeypatch):
    x, w, b, g = _inputs((5, 6, 24), -1, seed=3)
    module = RAA(24)
    with torch.no_grad():
        module.weight.copy_(w)
        module.bias.copy_(b)
    monkeypatch.setenv("DNRT_CPU_KERNELS", "0")
    assert cpu_kernels.load() is None
    assert cpu_kernels.status().startswith("off")
    xr = x.clone().requires_grad_(True)
    y = module(xr)
    y.backward(g)
    ry, rgx, rgw, _ = _reference(x, w, b, -1, "gelu", g)
    torch.testing.assert_close(y.double(), ry, atol=2e-6, rtol=2e-6)
    torch.testing.assert_close(xr.grad.double(), rgx, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(module.weight.grad.double(), rgw, atol=1e-4, rtol=1e-5)


def test_missing_compiler_warns_once_and_falls_back(monkeypatch, tmp_path):
    monkeypatch.delenv("DNRT_CPU_KERNELS", raising=False)  # kernels wanted, compiler missing
    monkeypatch.setenv("CC", "dnrt-no-such-compiler")
    monkeypatch.setenv("DNRT_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(cpu_kernels, "_library", None)
    monkeypatch.setattr(cpu_kernels, "_tried", False)
    monkeypatch.setattr(cpu_kernels, "_state", "not built yet")
    with pytest.warns(RuntimeWarning, match="no C compiler"):
        assert cpu_kernels.load() is None
    assert "no C compiler" in cpu_kernels.status()
    x = torch.randn(3, 8)
    torch.testing.assert_close(RAA(8)(x), torch.nn.functional.gelu(x), atol=1e-6, rtol=1e-5)
    assert not list(tmp_path.iterdir())


def test_build_is_cached(c_compiler, tmp_path):
    first = cpu_kernels.build(c_compiler, cache_dir=tmp_path)
    stamp = first.stat().st_mtime_ns
    second = cpu_kernels.build(c_compiler, cache_dir=tmp_path)
    assert second == first and second.stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temporary files left
    other = cpu_kernels.build(c_compiler, ("-DDNRT_TEST_VARIANT",), cache_dir=tmp_path)
    assert other != first  # flags are part of the key


def test_unwritable_cache_dir_falls_back_to_temp(c_compiler, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setattr(cpu_kernels.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    path = cpu_kernels.build(c_compiler, cache_dir=blocker / "cache")
    assert path.parent == tmp_path / "tmp" / f"dnrt-{os.getuid()}" and path.exists()
    assert cpu_kernels.open_library(path).dnrt_raa_forward is not None


def test_jit_trace_of_raa_runs_and_matches_eager():
    module = RAA(12)
    with torch.no_grad():
        module.weight.normal_()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarning about the Python op
        traced = torch.jit.trace(module, torch.randn(3, 4, 12), check_trace=False)
    x = torch.randn(5, 4, 12)
    torch.testing.assert_close(traced(x), module(x), atol=2e-6, rtol=2e-6)


def test_compiler_without_openmp_runtime_still_builds(c_compiler, tmp_path):
    """A compiler that rejects -fopenmp (Apple clang) gets -fopenmp-simd; the kernels then run
    on one thread and stay exact."""
    wrapper = tmp_path / "cc-no-openmp"
    wrapper.write_text(
        "#!/bin/sh\n"
        'for a in "$@"; do\n'
        '  [ "$a" = "-fopenmp" ] && { echo "unsupported: -fopenmp" >&2; exit 1; }\n'
        "done\n"
        f'exec {c_compiler} "$@"\n'
    )
    wrapper.chmod(0o755)
    lib = cpu_kernels.open_library(cpu_kernels.build(str(wrapper), cache_dir=tmp_path / "cache"))
    x, w, b, g = _inputs((40, 33), -1, seed=4)
    with _threads(2):
        got = _kernel(lib, x, w, b, -1, "gelu", g)
    _check(got, _reference(x, w, b, -1, "gelu", g))


@pytest.mark.parametrize("shape,dim", [((6, 40), -1), ((2, 5, 3, 7), 1)])
def test_frozen_weight_gets_no_gradient_and_input_gradient_is_exact(cpu_kernel_library, shape, dim):
    x, w, b, g = _inputs(shape, dim, seed=5)
    module = RAA(shape[dim], dim=dim)
    with torch.no_grad():
        module.weight.copy_(w)
        module.bias.copy_(b)
    module.weight.requires_grad_(False)
    xr = x.clone().requires_grad_(True)
    module(xr).backward(g)
    _, rgx, _, rgb = _reference(x, w, b, dim, "gelu", g)
    assert module.weight.grad is None
    torch.testing.assert_close(xr.grad.double(), rgx, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(module.bias.grad.double(), rgb, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("kernels", [True, False])
@pytest.mark.parametrize("shape,dim", [((0, 16), -1), ((0, 5, 16), -1), ((2, 16, 0, 3), 1)])
def test_empty_inputs(shape, dim, kernels, monkeypatch, request):
    """Empty batches / maps: empty outputs, zero parameter gradients, on both paths."""
    if kernels:
        request.getfixturevalue("cpu_kernel_library")
    else:
        monkeypatch.setenv("DNRT_CPU_KERNELS", "0")
    module = RAA(16, dim=dim)
    x = torch.randn(*shape, requires_grad=True)
    y = module(x)
    y.sum().backward()
    assert y.shape == x.shape and x.grad.shape == x.shape
    assert module.weight.grad.abs().sum() == 0 and module.bias.grad.abs().sum() == 0
