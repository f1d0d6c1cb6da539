"""Aggregated Response Regularization (ARR), DNRT paper eqs. 3-5.

A per-class memory ``mu`` (K × d) of aggregated responses. For each labelled
training sample (x, k), taken **in batch order, one after another**:

    mu_k <- x                       if mu_k is unset
    mu_k <- (1 - m)·mu_k + m·x      otherwise
    loss  = |x - mu_k|_1 / d        (mu_k detached)

``target="after"`` (default) compares x with mu_k after this sample's update, as
the released code does; ``target="before"`` uses mu_k before it (the paper's
eq. 4; a first-seen class then contributes zero).

The sequential recursion is evaluated in closed form, without a loop over
samples. Samples are grouped by class with a stable sort (batch order is kept
within a class). With a = 1-m, the memory after the sample at sorted position p
is a^p·V_p, where V is one running sum (cumsum) over the chunk of the terms

    a^(-st)·F_k        at the first position st of class k (F_k: the memory after
                       that sample, i.e. x itself for an unset class)
    m·a^(-p)·x_p       elsewhere, minus the previous class's total at each class start,

so it restarts at every class: O(n·d) work and a fixed number of tensor ops per
chunk. It runs in float64; chunks are capped so that a^(-n) stays finite.
"""

from __future__ import annotations

import contextlib
import functools
import math

import torch
from torch import nn

from .distributed import all_gather_cat, is_distributed

ARR_TARGETS = ("after", "before")
_F64_EXP_LIMIT = 600.0  # (1-m)^-n <= e^600 keeps float64 finite with ample headroom


@functools.lru_cache(maxsize=64)
def _decay_tables(n: int, decay: float, device: torch.device):
    """((1-m)^-p, (1-m)^p) for positions p < n, float64."""
    p = torch.arange(n, dtype=torch.float64, device=device)
    return torch.pow(decay, -p), torch.pow(decay, p)


@contextlib.contextmanager
def _single_threaded(device: torch.device):
    """Run the update's small CPU ops on one intra-op thread: each op is ~(B, d), too small
    to gain from splitting, and every split is a fork/join that stalls when the cores are
    shared (measured 0.56 ms -> 110 ms for batch 256 with 2 threads on a loaded 2-core box)."""
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class _L1ToTarget(torch.autograd.Function):
    """scale·sum|x - t| with t constant; both directions on one thread (see above)."""

    @staticmethod
    def forward(ctx, x, targets, scale: float):  # type: ignore[override]
        with _single_threaded(x.device):
            diff = x - targets.to(x.dtype)
            loss = diff.abs().sum().mul_(scale)
        ctx.save_for_backward(diff)
        ctx.scale = scale
        return loss

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        (diff,) = ctx.saved_tensors
        with _single_threaded(diff.device):
            grad = diff.sign_().mul_(grad_out * ctx.scale)
        return grad, None, None


class ARR(nn.Module):
    """Class-wise response memory with the ARR loss.

    Args:
        num_classes: K.
        num_features: d (``None``: inferred from the first batch).
        momentum: m, the weight of the new response.
        target: ``"after"`` or ``"before"`` (see module docstring).
        chunk_size: samples per vectorised block (the memory is carried from block to block).
        sync: under DDP, update from the all-gathered batch so every rank holds the same memory.

    Shape: ``forward(x, y)`` with ``x`` ``(B, d)``, ``y`` ``(B,)`` integer labels
    (negative = ignored); returns a scalar: the mean over labelled samples of
    ``|x - mu_y|_1 / d`` (0 when none or in eval mode).
    """

    def __init__(
        self,
        num_classes: int,
        num_features: int | None = None,
        momentum: float = 0.1,
        target: str = "after",
        chunk_size: int = 512,
        sync: bool = True,
    ):
        super().__init__()
        if num_classes <= 0:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        if not 0.0 < momentum <= 1.0:
            raise ValueError(f"ARR momentum must be in (0, 1], got {momentum}")
        if target not in ARR_TARGETS:
            raise ValueError(f"ARR target must be one of {ARR_TARGETS}, got {target!r}")
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        self.num_classes = num_classes
        self.momentum = float(momentum)
        self.target = target
        self.chunk_size = int(chunk_size)
        self.sync = sync
        d = num_features or 0
        self.register_buffer("memory", torch.zeros(num_classes, d))
        self.register_buffer("initialized", torch.zeros(num_classes, dtype=torch.bool))
        self._register_load_state_dict_pre_hook(self._resize_on_load)

    @property
    def num_features(self) -> int | None:
        return self.memory.shape[1] or None

    def reset_parameters(self) -> None:
        self.memory.zero_()
        self.initialized.zero_()

    def _resize_on_load(self, state_dict, prefix, *args, **kwargs) -> None:
        stored = state_dict.get(prefix + "memory")
        if stored is not None and stored.shape != self.memory.shape:
            self.memory = self.memory.new_zeros(stored.shape)

    def _check(self, x: torch.Tensor, y: torch.Tensor) -> int:
        """Validate shapes/labels, size a lazy memory; return the number of labelled samples."""
        if x.dim() != 2:
            raise ValueError(f"ARR expects aggregated responses (B, d), got {tuple(x.shape)}")
        if y.shape != (x.shape[0],):
            raise ValueError(f"ARR labels must have shape ({x.shape[0]},), got {tuple(y.shape)}")
        if self.memory.shape[1] == 0:
            self.memory = self.memory.new_zeros(self.num_classes, x.shape[1])
        elif x.shape[1] != self.memory.shape[1]:
            raise ValueError(
                f"ARR memory has d={self.memory.shape[1]}, response has d={x.shape[1]}"
            )
        if y.numel() == 0:
            return 0
        lo, hi = (int(v) for v in torch.aminmax(y))
        if hi >= self.num_classes:
            raise ValueError(f"label {hi} out of range for ARR with num_classes={self.num_classes}")
        if lo >= 0:
            return y.numel()
        return int((y >= 0).sum())

    # ------------------------------------------------------------------ update

    @torch.no_grad()
    def update(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Apply the sequential update for the batch; return each sample's target (B, d).

        Rows of ignored samples (label < 0) hold x itself.
        """
        return self._update(x, y)[0]

    @torch.no_grad()
    def _update(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, int]:
        with _single_threaded(x.device):
            return self._update_serial(x, y)

    def _update_serial(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, int]:
        x = x.detach().to(self.memory.dtype)
        y = y.long()
        n_valid = self._check(x, y)
        if n_valid == 0:
            return x, 0
        if n_valid < x.shape[0]:  # drop ignored samples; their targets are x itself
            keep = (y >= 0).nonzero().squeeze(1)
            targets = x.clone()
            targets[keep] = self._update_valid(x[keep], y[keep])
            return targets, n_valid
        return self._update_valid(x, y), n_valid

    def _update_valid(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        step = self._max_chunk()
        if x.shape[0] <= step:
            return self._update_chunk(x, y)
        return torch.cat(
            [self._update_chunk(x[i : i + step], y[i : i + step]) for i in range(0, len(y), step)]
        )

    def _max_chunk(self) -> int:
        """Samples per vectorised block: ``chunk_size``, fewer if (1-m)^-n overflows float64."""
        decay = 1.0 - self.momentum
        if decay <= 0.0 or decay >= 1.0:
            return self.chunk_size
        return max(1, min(self.chunk_size, int(_F64_EXP_LIMIT / -math.log(decay)) + 1))

    def _update_chunk(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """All labels valid. Returns the targets, updates memory/initialized."""
        m = self.momentum
        # group samples by class, keeping batch order within a class (stable sort)
        ys, order = torch.sort(y, stable=True)
        xs = x.index_select(0, order)
        classes, seg, counts = torch.unique_consecutive(ys, return_inverse=True, return_counts=True)
        ends = counts.cumsum(0)
        starts = ends - counts
        x_first = xs.index_select(0, starts)
        # the class memory before the chunk; an unset class starts from its first sample
        known = self.initialized.index_select(0, classes)[:, None]
        mu0 = torch.where(known, self.memory.index_select(0, classes), x_first)
        if m >= 1.0:  # mu_k = x: the memory is the latest sample
            after = xs
        else:
            after = self._closed_form(xs, starts, seg, torch.lerp(mu0, x_first, m))
        if self.target == "after":
            target = after
        else:  # the memory just before each sample: the previous same-class "after", or mu0
            is_first = torch.zeros_like(y, dtype=torch.bool).index_fill_(0, starts, True)
            target = torch.where(is_first[:, None], mu0.index_select(0, seg), after.roll(1, 0))
        # memory after the chunk: each class's last "after"
        self.memory.index_copy_(0, classes, after.index_select(0, ends - 1))
        self.initialized.index_fill_(0, classes, True)
        return torch.empty_like(x).index_copy_(0, order, target)

    def _closed_form(self, xs, starts, seg, first) -> torch.Tensor:
        """Memory after each sample for class-sorted ``xs`` (n, d); ``first`` (P, d) is the
        memory after each class's first sample (at sorted position st_k).

        With a = 1-m, the memory after the sample at position p of class k is
        a^p·V_p, where V is the running sum of the terms a^-st_k·F_k (at a class start)
        and m·a^-q·x_q (elsewhere): the sequential rule mu <- a·mu + m·x, rescaled. Each
        class start also subtracts the previous class's total, so one cumulative sum over
        the chunk restarts at every class. Exponents grow with p, so the subtracted totals
        are never large next to the current terms; float64 keeps a^-p in range.
        """
        m = self.momentum
        inv_pow, pow_ = _decay_tables(xs.shape[0], 1.0 - m, xs.device)
        f64 = torch.float64
        terms = xs.to(f64, copy=True).mul_(inv_pow[:, None]).mul_(m)
        terms.index_copy_(0, starts, first.to(f64).mul_(inv_pow.index_select(0, starts)[:, None]))
        totals = terms.new_zeros(first.shape).index_add_(0, seg, terms)
        terms.index_add_(0, starts[1:], totals[:-1], alpha=-1.0)
        running = torch.cumsum(terms.t(), dim=1).t()  # along the contiguous axis: faster on CPU
        return running.mul_(pow_[:, None]).to(xs.dtype, memory_format=torch.contiguous_format)

    # ------------------------------------------------------------------ loss

    def forward(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        if not self.training or y is None:
            return x.new_zeros(())
        y = y.long()
        if self.sync and is_distributed():
            all_x, offset = all_gather_cat(x.detach())
            all_y, _ = all_gather_cat(y)
            targets = self.update(all_x, all_y)[offset : offset + x.shape[0]]
            n_valid = int((y >= 0).sum())
        else:
            targets, n_valid = self._update(x, y)
        # ignored rows have target == x: they add exactly 0 (and a zero gradient)
        return _L1ToTarget.apply(x, targets, 1.0 / float(max(n_valid, 1) * x.shape[1]))

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, num_features={self.num_features}, "
            f"momentum={self.momentum}, target={self.target!r}"
        )
