"""The fused RAA path (autograd Function, blocked tensor ops) against the plain definition."""

from __future__ import annotations

import pytest
import torch

from dnrt_core.mechanisms.raa import RAA, RAA_BASES, raa_reference
from dnrt_core.mechanisms.raa_fused import RAAFunction, traceable_raa


@pytest.mark.parametrize("base", RAA_BASES)
@pytest.mark.parametrize("shape,dim", [((4, 5), -1), ((2, 3, 5), 2), ((2, 5, 2, 3), 1)])
def test_fused_function_gradcheck_and_equals_reference(base, shape, dim):
    torch.manual_seed(3)
    d = shape[dim]
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    if base == "relu":  # keep x + s away from the kink, where the gradient is undefined
        with torch.no_grad():
            x.add_(torch.sign(x) * 0.3)
    w = (0.3 * torch.randn(d, dtype=torch.float64)).requires_grad_(True)
    b = (0.1 * torch.randn(1, dtype=torch.float64)).requires_grad_(True)

    def fused(x, w, b):
        return RAAFunction.apply(x, w, b, dim, base)

    assert torch.autograd.gradcheck(fused, (x, w, b), eps=1e-6, atol=1e-5)
    # the fused backward equals autograd through the plain-op reference
    g = torch.randn(*shape, dtype=torch.float64)
    out_f = fused(x, w, b)
    out_r = raa_reference(x, w, b, dim, base)
    torch.testing.assert_close(out_f, out_r, atol=1e-12, rtol=1e-10)
    grads_f = torch.autograd.grad(out_f, (x, w, b), g)
    grads_r = torch.autograd.grad(out_r, (x, w, b), g)
    for got, want in zip(grads_f, grads_r, strict=True):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-8)


def test_fused_handles_non_contiguous_input_and_only_weight_grad():
    x = torch.randn(3, 7, 5).transpose(1, 2)  # (3, 5, 7), non-contiguous, features last
    w = torch.randn(7, requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    out = RAAFunction.apply(x, w, b, 2, "silu")
    ref = raa_reference(x, w, b, 2, "silu")
    torch.testing.assert_close(out, ref)
    (gw,) = torch.autograd.grad(out.sum(), (w,))
    (gw_ref,) = torch.autograd.grad(ref.sum(), (w,))
    torch.testing.assert_close(gw, gw_ref, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("base", RAA_BASES)
@pytest.mark.parametrize("shape,dim", [((37, 24), -1), ((3, 11, 24), 2), ((7, 24, 3, 5), 1)])
def test_cpu_blocked_path_with_ragged_last_block(monkeypatch, base, shape, dim):
    """Several cache blocks (and a shorter last one) give the same values and gradients."""
    import dnrt_core.mechanisms.raa_fused as raa_module

    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    x3 = raa_module._as_3d(x.detach(), dim % x.dim())
    row, threads = x3.shape[1] * x3.shape[2], torch.get_num_threads()
    # two rows of the (A, d, C) view per block; every shape has an odd number of rows
    monkeypatch.setattr(raa_module, "CPU_BLOCK_ELEMENTS", (2 * row + threads - 1) // threads)
    blocks = raa_module._split(x3)
    assert len(blocks) > 2 and [blk[0].shape[0] for blk in blocks[-2:]] == [2, 1]
    w = (0.2 * torch.randn(shape[dim], dtype=torch.float64)).requires_grad_(True)
    b = torch.full((1,), 0.1, dtype=torch.float64, requires_grad=True)
    g = torch.randn(*shape, dtype=torch.float64)
    out = RAAFunction.apply(x, w, b, dim, base)
    ref = raa_reference(x, w, b, dim, base)
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=1e-10)
    got = torch.autograd.grad(out, (x, w, b), g)
    want = torch.autograd.grad(ref, (x, w, b), g)
    for a, e in zip(got, want, strict=True):
        torch.testing.assert_close(a, e, atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("base", RAA_BASES)
@pytest.mark.parametrize("shape,dim", [((4, 5), -1), ((2, 3, 5), 2), ((2, 5, 2, 3), 1)])
def test_traceable_path_equals_reference_with_gradients(base, shape, dim):
    torch.manual_seed(0)
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    w = (0.3 * torch.randn(5, dtype=torch.float64)).requires_grad_()
    b = torch.tensor([0.2], dtype=torch.float64, requires_grad=True)
    out = traceable_raa(x, w, b, dim, base)
    ref = raa_reference(x, w, b, dim, base)
    torch.testing.assert_close(out, ref)
    grads = torch.autograd.grad(out.square().sum(), (x, w, b))
    ref_grads = torch.autograd.grad(ref.square().sum(), (x, w, b))
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r)


def test_graph_capture_takes_the_traceable_path():
    from torch._subclasses.fake_tensor import FakeTensorMode

    from dnrt_core.kernels import capturing_graph

    raa = RAA(6)
    x = torch.randn(3, 6)
    assert not capturing_graph(x)
    assert type(raa(x).grad_fn).__name__ == "RAAFunctionBackward"
    traced = torch.jit.trace(raa, (x,))  # records functional ops, no PythonOp
    assert "PythonOp" not in str(traced.graph) and "erf" in str(traced.graph)
    torch.testing.assert_close(traced(x), raa(x))
    with FakeTensorMode() as mode:
        fake = mode.from_tensor(x)
        assert capturing_graph(fake)
