"""The fused RAA path: one autograd Function for every base (see :mod:`.raa` for the equation).

:class:`RAAFunction` saves only the input and the (..., 1) shift (the gate is recomputed in
the backward) and costs one matvec per vector in each direction. Two implementations:

* float32 on CPU: the C kernels of :mod:`dnrt_core.kernels` (built on first use), one pass
  over memory per direction, like a stock activation;
* otherwise (other dtypes and devices, tracing, or no C compiler): tensor ops. On CPU they
  work on cache-sized blocks of feature vectors: a block's matvec and its short chain of
  elementwise ops (written into preallocated outputs with ``out=``) run while the block is
  in L2.

Both agree with :func:`dnrt_core.mechanisms.raa.raa_reference` to float rounding.

While a graph is captured for export (``torch.export``, the ONNX exporters, ``torch.jit.trace``;
see :func:`dnrt_core.kernels.capturing_graph`), :func:`fused_raa` records
:func:`traceable_raa` instead: the same equation in functional tensor ops (one matmul for the
shift, then ``erf`` / ``relu`` / ``sigmoid``), which every exporter and runtime understands.
"""

from __future__ import annotations

import math

import torch

from ..kernels import loader as kernels

_KERNEL_BASE = {"gelu": 0, "relu": 1, "silu": 2}  # the C kernels' base ids
_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT2PI = 1.0 / math.sqrt(2.0 * math.pi)
_LOG_INV_SQRT2PI = math.log(_INV_SQRT2PI)
#: elements per block and intra-op thread of the CPU elementwise chain (256 KiB of float32)
CPU_BLOCK_ELEMENTS = 1 << 16


def _as_3d(x: torch.Tensor, dim: int) -> torch.Tensor:
    """View ``x`` as (A, d, C), the feature dimension in the middle (no copy if contiguous)."""
    return x.reshape(math.prod(x.shape[:dim]), x.shape[dim], math.prod(x.shape[dim + 1 :]))


def _split(x3: torch.Tensor, *tensors: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
    """Blocks of rows of the (A, d, C) view and the matching rows of ``tensors``:
    cache-sized on CPU, one block elsewhere."""
    rows = x3.shape[0]
    step = rows
    if x3.device.type == "cpu":  # each intra-op thread gets a cache-sized share
        block = CPU_BLOCK_ELEMENTS * torch.get_num_threads()
        step = max(1, block // max(1, x3.shape[1] * x3.shape[2]))
    if step >= rows:
        return [(x3, *tensors)]
    return list(zip(*(t.split(step) for t in (x3, *tensors)), strict=True))


def _forward_block(base, x, s, tmp, out, zero) -> None:
    """One block of y; out-of-place transcendental ops (their in-place forms are slower on CPU)."""
    if base == "gelu":  # x·Phi(z) = 0.5·x·erfc(-z/sqrt2)
        torch.add(s, x, alpha=-_INV_SQRT2, out=tmp)  # s arrives as -s/sqrt2
        torch.erfc(tmp, out=out)
        torch.addcmul(zero, out, x, value=0.5, out=out)
    elif base == "relu":
        torch.add(x, s, out=out).relu_()
    else:
        torch.sigmoid(torch.add(x, s, out=tmp), out=out).mul_(x)


def _backward_block(base, x, s, g, w3, tmp, grad_x, grad_s, log_c) -> None:
    """grad_x = dL/dx (direct term + g_s·w) and grad_s = dL/ds = sum over the vector of dL/dz."""
    if base == "gelu":
        # u = -z/sqrt2;  dL/dz = g·x·phi(z) = g·x·exp(-u²)/sqrt(2pi);  direct = g·Phi(z) + dL/dz
        u = torch.add(s, x, alpha=-_INV_SQRT2, out=tmp)
        torch.erfc(u, out=grad_x)  # 2·Phi(z)
        g_z = torch.addcmul(log_c, u, u, value=-1.0, out=tmp).exp_()  # exp(-u²)/sqrt(2pi)
        g_z.mul_(x).mul_(g)
        torch.sum(g_z, dim=1, keepdim=True, out=grad_s)
        torch.addcmul(g_z, g, grad_x, value=0.5, out=grad_x)
    elif base == "relu":  # dL/dz = g·1[z > 0] is also the direct term
        z = torch.add(x, s, out=tmp)
        torch.ops.aten.threshold_backward.grad_input(g, z, 0.0, grad_input=grad_x)
        torch.sum(grad_x, dim=1, keepdim=True, out=grad_s)
    else:  # dL/dz = g·x·sig·(1 - sig); direct = g·sig + dL/dz
        sig = torch.sigmoid(torch.add(x, s, out=tmp), out=grad_x)
        g_z = torch.addcmul(sig, sig, sig, value=-1.0, out=tmp).mul_(x).mul_(g)
        torch.sum(g_z, dim=1, keepdim=True, out=grad_s)
        torch.addcmul(g_z, g, sig, out=grad_x)
    grad_x.addcmul_(grad_s, w3)


def _shift(x3: torch.Tensor, w: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> None:
    """out (A, 1, C) = w·x + b over the middle axis of x3 (A, d, C): one matvec per vector."""
    if x3.shape[2] == 1:
        torch.addmv(b, x3.view(x3.shape[0], x3.shape[1]), w, out=out.view(-1))
    else:
        torch.matmul(w, x3, out=out.view(x3.shape[0], x3.shape[2])).add_(b)


def _weight_grad(x3: torch.Tensor, g_s3: torch.Tensor, out: torch.Tensor) -> None:
    """out (d,) += sum over the vectors of x3 (A, d, C) of dL/ds · x (one matvec); ``out`` may
    be float32 while x3 is half precision (the blocks' partial sums then add up in float32)."""
    if x3.shape[2] != 1:
        out.add_(torch.bmm(x3, g_s3.transpose(1, 2)).sum(dim=(0, 2)))
    elif out.dtype == x3.dtype:
        out.addmv_(x3.view(x3.shape[0], x3.shape[1]).t(), g_s3.view(-1))
    else:
        out.add_(torch.mv(x3.view(x3.shape[0], x3.shape[1]).t(), g_s3.view(-1)))


def _tmp_views(tmp: torch.Tensor, blocks) -> list[torch.Tensor]:
    return [tmp if blk[0].shape[0] == tmp.shape[0] else tmp[: blk[0].shape[0]] for blk in blocks]


def _kernel_forward(lib, x3: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, base: str):
    """y (A, d, C) and the shift s (A, C) of the contiguous x3 (A, d, C) with the C kernel."""
    a, d, c = x3.shape
    w = weight.detach().contiguous()
    y3 = torch.empty_like(x3)
    s2 = x3.new_empty((a, c))
    lib.dnrt_raa_forward(
        _KERNEL_BASE[base], x3.data_ptr(), w.data_ptr(), float(bias), y3.data_ptr(),
        s2.data_ptr(), a, d, c, torch.get_num_threads(),
    )  # fmt: skip
    return y3, s2


def _kernel_backward(lib, x3, s2, g3, weight, base: str, weight_grad: bool):
    """grad_x (A, d, C), grad_s (A, C) and grad_w (d,) or None with the C kernel."""
    a, d, c = x3.shape
    threads = torch.get_num_threads()
    w = weight.detach().contiguous()
    grad_x3 = torch.empty_like(x3)
    grad_s2 = x3.new_empty((a, c))
    partial_w = x3.new_zeros((threads, d)) if weight_grad else None  # one row per thread
    lib.dnrt_raa_backward(
        _KERNEL_BASE[base], x3.data_ptr(), s2.data_ptr(), g3.data_ptr(), w.data_ptr(),
        grad_x3.data_ptr(), grad_s2.data_ptr(),
        None if partial_w is None else partial_w.data_ptr(), a, d, c, threads,
    )  # fmt: skip
    return grad_x3, grad_s2, None if partial_w is None else partial_w.sum(0)


class RAAFunction(torch.autograd.Function):
    """Fused RAA: saves x and the shift s only; the gate is recomputed in backward.

    The elementwise chain runs block by block (see :func:`_split`) into preallocated
    outputs, so every pass of a block reads cache, not memory.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, dim: int, base: str):  # type: ignore[override]
        dim = dim % x.dim()
        x3 = _as_3d(x, dim)
        ctx.dim = dim
        ctx.base = base
        lib = kernels.library_for(x, weight)
        ctx.kernel = lib
        if lib is not None:
            x3 = x3.contiguous()
            y3, s2 = _kernel_forward(lib, x3, weight, bias, base)
            ctx.save_for_backward(x3, s2, weight)
            return y3.view(x.shape)
        w, b = weight.to(x.dtype), bias.to(x.dtype)
        if base == "gelu":  # the GELU chain works with -z/sqrt2: keep -s/sqrt2 instead of s
            w, b = w * -_INV_SQRT2, b * -_INV_SQRT2
        s3 = x3.new_empty((x3.shape[0], 1, x3.shape[2]))
        y3 = torch.empty_like(x3, memory_format=torch.contiguous_format)
        blocks = _split(x3, s3, y3)
        tmp = x3.new_empty(blocks[0][0].shape)
        zero = x3.new_zeros(())
        for (xb, sb, yb), tb in zip(blocks, _tmp_views(tmp, blocks), strict=True):
            _shift(xb, w, b, out=sb)  # the block's matvec, while it is in cache
            _forward_block(base, xb, sb, tb, yb, zero)
        shape = list(x.shape)
        shape[dim] = 1
        ctx.save_for_backward(x, s3.view(shape), weight)
        return y3.view(x.shape)

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        if ctx.kernel is not None:
            return RAAFunction._kernel_backward(ctx, grad_out)
        x, s, weight = ctx.saved_tensors
        dim, base = ctx.dim, ctx.base
        x3 = _as_3d(x, dim)
        s3 = s.reshape(x3.shape[0], 1, x3.shape[2])  # -s/sqrt2 for gelu
        g3 = grad_out.reshape(x3.shape)
        w3 = weight.to(x.dtype).view(1, -1, 1)
        grad_x3 = torch.empty_like(x3, memory_format=torch.contiguous_format)
        grad_s3 = x3.new_empty(s3.shape)
        blocks = _split(x3, s3, g3, grad_x3, grad_s3)
        tmp = x3.new_empty(blocks[0][0].shape)
        log_c = x3.new_full((), _LOG_INV_SQRT2PI)
        grad_w = None
        if ctx.needs_input_grad[1]:
            grad_w = x3.new_zeros(x3.shape[1], dtype=torch.promote_types(x.dtype, weight.dtype))
        for (xb, sb, gb, gxb, gsb), tb in zip(blocks, _tmp_views(tmp, blocks), strict=True):
            _backward_block(base, xb, sb, gb, w3, tb, gxb, gsb, log_c)
            if grad_w is not None:
                _weight_grad(xb, gsb, out=grad_w)
        grad_weight = grad_bias = grad_x = None
        if grad_w is not None:
            grad_weight = grad_w.to(weight.dtype)
        if ctx.needs_input_grad[2]:
            grad_bias = grad_s3.sum().reshape(1).to(weight.dtype)
        if ctx.needs_input_grad[0]:
            grad_x = grad_x3.view(x.shape)
        return grad_x, grad_weight, grad_bias, None, None

    @staticmethod
    def _kernel_backward(ctx, grad_out):
        x3, s2, weight = ctx.saved_tensors
        g3 = grad_out.reshape(x3.shape).contiguous()
        grad_x3, grad_s2, grad_w = _kernel_backward(
            ctx.kernel, x3, s2, g3, weight, ctx.base, ctx.needs_input_grad[1]
        )
        grad_bias = grad_s2.sum().reshape(1) if ctx.needs_input_grad[2] else None
        grad_x = grad_x3.view(grad_out.shape) if ctx.needs_input_grad[0] else None
        return grad_x, grad_w, grad_bias, None, None


def traceable_raa(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, dim: int,
                  base: str) -> torch.Tensor:  # fmt: skip
    """RAA in functional tensor ops (autograd does the backward), for graph capture:
    ``s = x·w + b`` as one matmul over the feature dimension ``dim``, then the base gate."""
    dim = dim % x.dim()
    s = torch.matmul(x.movedim(dim, -1), weight.to(x.dtype)) + bias.to(x.dtype)
    z = x + s.unsqueeze(dim)
    if base == "gelu":
        return x * (0.5 * (1.0 + torch.erf(z * _INV_SQRT2)))
    if base == "relu":
        return torch.relu(z)
    if base == "silu":
        return x * torch.sigmoid(z)
    raise ValueError(f"unknown RAA base {base!r}; valid: {', '.join(_KERNEL_BASE)}")


def fused_raa(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, dim: int,
              base: str) -> torch.Tensor:  # fmt: skip
    """RAA of ``x`` with features along ``dim``: ``weight`` (d,), ``bias`` (1,); same shape out.
    :func:`traceable_raa` while a graph is captured for export."""
    if kernels.capturing_graph(x, weight):
        return traceable_raa(x, weight, bias, dim, base)
    return RAAFunction.apply(x, weight, bias, dim, base)
