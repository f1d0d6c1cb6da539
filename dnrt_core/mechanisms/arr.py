"""Aggregated Response Regularization (ARR), DNRT paper eqs. 3-5.

A per-class memory ``mu`` (K × d) of aggregated responses. For each labelled
training sample (x, k), taken **in batch order, one after another**:

    mu_k <- x                       if mu_k is unset
    mu_k <- (1 - m)·mu_k + m·x      otherwise
    loss  = |x - mu_k|_1 / d        (mu_k detached)

``target="after"`` (default) compares x with mu_k after this sample's update, as
the released code does; ``target="before"`` uses mu_k before it (the paper's
eq. 4; a first-seen class then contributes zero).

The sequential recursion is evaluated without a loop over samples. One stable
sort groups the samples by class (batch order is kept within a class; ignored
labels sort first and are dropped). Then, with n_max the largest class count in
the batch:

* n_max <= RANK_LOOP_MAX (the usual case, e.g. batch 256 over 100 classes): a loop
  over *ranks*, vectorised over classes. A second sort puts the rows in rank-major
  order (every class's first sample, then every second sample, ...; classes by
  decreasing count, so the classes at rank r are the first n_r of rank r-1). Per
  rank two in-place ops on those n_r rows: ``x - mu`` (the distance to the memory
  *before* the sample) and ``mu += m·(x - mu)``. The distance to the memory
  *after* the sample is exactly (1-m) times the first, so the loss of either
  target is a scale of the same differences (and sign(), the gradient, is shared).
* otherwise (long runs of one class): the recurrence h_p = a·h_(p-1) + m·x_p
  (a = 1-m; restarting at each class with (1-m)·mu_k + m·x, or x for an unset
  class) as a log-depth Hillis-Steele scan over the class-sorted rows:
  ceil(log2(n_max)) steps of ``h_p += a^s·h_(p-s)``, s = 1, 2, 4, ..., with
  coefficient 0 where p-s lies in another class.

With a float32 memory on CPU, the C kernel of :mod:`dnrt_core.kernels` runs the
recursion itself, sample by sample (B·d multiply-adds, no per-op dispatch); the tensor-op
paths above serve other dtypes and devices, or when no C compiler is available.

The recurrence is :class:`ClassEMA`, on whatever memory it is given: ARR's (unset classes
start at their first sample) or a zero-initialised one (DPA's forward and backward memories).

The tensor-op paths work in the memory's dtype (the scan's coefficients are powers of a <= 1, so
float32 is stable) and do O(n·d) (ranks) or O(n·d·log n_max) (scan) work in a few
dozen tensor ops. The loss is computed on the sorted rows; its backward puts the
gradient back in batch order with one gather.
"""

from __future__ import annotations

import bisect
import ctypes
import functools

import torch
from torch import nn

from ..kernels import loader as cpu_kernels
from .distributed import all_gather_cat, is_distributed

ARR_TARGETS = ("after", "before")
#: largest class count in a block for which the update loops over ranks (ARR._by_rank):
#: two small ops per rank; beyond it the log-depth scan (ARR._by_scan) is cheaper (both cost
#: about the same at n_max ~ 35 for batch 256, d 192 on CPU)
RANK_LOOP_MAX = 32
#: scan coefficients a^s below this are set to 0 (their terms are far below rounding;
#: keeping them would only produce slow denormal arithmetic)
_NEGLIGIBLE = 1e-20


@functools.lru_cache(maxsize=64)
def _arange(n: int, device: torch.device) -> torch.Tensor:
    """0..n-1 (int64), cached: never modify it in place."""
    return torch.arange(n, device=device)


@functools.lru_cache(maxsize=64)
def _rank_scale(n: int, device: torch.device) -> torch.Tensor:
    """p·(n+1) for positions p < n (int64), cached: never modify it in place."""
    return torch.arange(0, n * (n + 1), n + 1, device=device)


@functools.lru_cache(maxsize=64)
def _scan_tables(nsteps: int, momentum: float, dtype: torch.dtype, device: torch.device):
    """Shifts s = 1, 2, 4, ... of the scan, as ints and as a (nsteps, 1, 1) tensor, the
    coefficients a^s = (1-m)^s (same shape, in ``dtype``) and the 0-d weights (m, 1) of a
    class's first sample (set / unset class). Cached: never modify them in place."""
    shifts = [1 << i for i in range(nsteps)]
    steps = torch.tensor(shifts, device=device).view(-1, 1, 1)
    decay = 1.0 - momentum
    pows = [decay**s if decay**s >= _NEGLIGIBLE else 0.0 for s in shifts]
    pows = torch.tensor(pows, dtype=dtype, device=device).view(-1, 1, 1)
    weights = torch.tensor([momentum, 1.0], dtype=dtype, device=device).unbind()
    return shifts, steps, pows, weights


def _single_threaded(device: torch.device, fn, *args):
    """``fn(*args)`` with the CPU ops on one intra-op thread: each op is ~(B, d), too small
    to gain from splitting, and every split is a fork/join that stalls when the cores are
    shared (measured 0.56 ms -> 110 ms for batch 256 with 2 threads on a loaded 2-core box)."""
    threads = torch.get_num_threads()
    if threads == 1 or device.type != "cpu":
        return fn(*args)
    torch.set_num_threads(1)
    try:
        return fn(*args)
    finally:
        torch.set_num_threads(threads)


def _l1(diff: torch.Tensor, scale: float) -> torch.Tensor:
    return diff.abs().sum().mul_(scale)


def _l1_grad(diff: torch.Tensor, order: torch.Tensor | None, g: torch.Tensor) -> torch.Tensor:
    grad = diff.sign().mul_(g)
    return grad if order is None else _unsort(grad, order)


def _unsort(rows: torch.Tensor, order: torch.Tensor | None) -> torch.Tensor:
    """The rows back in batch order: ``out[order[p]] = rows[p]`` (a gather, faster than a
    scatter of rows on CPU); ``order=None``: already in batch order."""
    if order is None:
        return rows
    inverse = torch.empty_like(order).scatter_(0, order, _arange(len(order), order.device))
    return rows.index_select(0, inverse)


class _L1OfDiff(torch.autograd.Function):
    """scale·factor·sum|diff| where ``factor·diff = x[order] - targets`` was computed without
    autograd (targets constant, factor >= 0): the gradient to x is scale·sign(diff), put
    back in batch order (``order``: the row of x of each row of ``diff``; ``None``: the same
    order). ``abs_sum``: sum|diff| when already known (the C kernel computes it)."""

    @staticmethod
    def forward(ctx, x, diff, order, scale, factor, abs_sum=None):  # type: ignore[override]
        if abs_sum is None:
            loss = _single_threaded(diff.device, _l1, diff, scale * factor)
        else:
            loss = torch.tensor(abs_sum * scale * factor, dtype=diff.dtype)
        ctx.save_for_backward(diff, order)
        ctx.scale = scale if factor > 0.0 else 0.0  # factor 0: x - target is 0
        ctx.dtype = x.dtype
        return loss if loss.dtype == x.dtype else loss.to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        diff, order = ctx.saved_tensors
        g = grad_out.to(diff.dtype) * ctx.scale
        grad = _single_threaded(diff.device, _l1_grad, diff, order, g)
        return grad.to(ctx.dtype), None, None, None, None, None


class ClassEMA:
    """The per-class recurrence on given buffers, sample by sample in batch order:

        mu_k <- x                    if mu_k is unset
        mu_k <- mu_k + m·(x - mu_k)  otherwise

    Args:
        memory: ``(K, d)`` buffer, updated in place.
        initialized: ``(K,)`` bool buffer of the classes already set (updated in place);
            ``None`` for a zero-initialised memory, where every class counts as set (DPA).
        momentum: m, the weight of the new sample.
        after: the target of a sample is the memory after (``True``) or before its update.
        chunk_size: samples per vectorised block (see :class:`ARR`).
        owner: the module named in error messages.
    """

    def __init__(self, memory: torch.Tensor, initialized: torch.Tensor | None, momentum: float,
                 after: bool = True, chunk_size: int = 512, owner: str = "ARR"):  # fmt: skip
        self.memory = memory
        self.initialized = initialized
        self.momentum = float(momentum)
        self.after = after
        self.chunk_size = int(chunk_size)
        self.owner = owner

    def check_labels(self, hi: int) -> None:
        if hi >= self.memory.shape[0]:
            raise ValueError(
                f"label {hi} out of range for {self.owner} with num_classes={self.memory.shape[0]}"
            )

    @torch.no_grad()
    def targets(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Update the memory from ``x`` (B, d), ``y`` (B,); return each sample's target (B, d):
        the memory after (or before) that sample's own update. Rows of ignored samples
        (label < 0) hold x itself."""
        x = x.detach().to(self.memory.dtype)
        diff, order, factor, _, _ = self.diffs(x, y.long())
        return x - _unsort(diff, order).mul_(factor)

    def diffs(
        self, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, float, int, float | None]:
        """Update the memory from the batch (in batch order, block by block).

        Returns ``(diff, order, factor, n_valid, abs_sum)``: ``factor·diff[p]`` (B, d) is
        x - target for the sample ``order[p]`` (``order=None``: sample p; zero rows for
        ignored samples), ``n_valid`` the number of labelled samples, ``abs_sum`` the sum of
        ``|diff|`` when the C kernel computed it on the way (else ``None``).
        """
        if x.dtype != self.memory.dtype:
            x = x.to(self.memory.dtype)
        # the kernel writes the memory in place: only when it is one dense float32 block
        lib = cpu_kernels.library_for(x, self.memory) if self.memory.is_contiguous() else None
        if lib is not None:
            return self._diffs_kernel(lib, x, y)
        if x.shape[0] <= self.chunk_size:
            return (*_single_threaded(x.device, self._diff_chunk, x, y), None)
        self.check_labels(int(y.max()))  # before any block updates the memory
        parts, n_valid = [], 0
        for i in range(0, x.shape[0], self.chunk_size):
            xc, yc = x[i : i + self.chunk_size], y[i : i + self.chunk_size]
            diff, order, factor, n = _single_threaded(x.device, self._diff_chunk, xc, yc)
            parts.append((diff.mul_(factor) if factor != 1.0 else diff, order + i))
            n_valid += n
        diffs, orders = zip(*parts, strict=True)
        return torch.cat(diffs), torch.cat(orders), 1.0, n_valid, None

    def _diffs_kernel(self, lib, x: torch.Tensor, y: torch.Tensor):
        """:meth:`diffs` by the C kernel: the recursion sample by sample, diffs in batch order."""
        if len(y):
            self.check_labels(int(y.max()))  # before the memory is touched
        x, y = x.contiguous(), y.contiguous()
        diff = torch.empty_like(x)
        abs_sum = ctypes.c_double()
        initialized = self.initialized
        if initialized is None:  # zero-initialised: every class is set
            initialized = torch.ones(self.memory.shape[0], dtype=torch.bool)
        n_valid = lib.dnrt_arr_update(
            x.data_ptr(), y.data_ptr(), self.memory.data_ptr(), initialized.data_ptr(),
            diff.data_ptr(), x.shape[0], x.shape[1], self.momentum, self.after,
            ctypes.byref(abs_sum),
        )  # fmt: skip
        for buffer in (self.memory, self.initialized):  # written behind autograd's back
            if buffer is not None:
                torch.autograd.graph.increment_version(buffer)
        return diff, None, 1.0, int(n_valid), abs_sum.value

    def _diff_chunk(
        self, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, float, int]:
        """One block of :meth:`diffs`; updates memory/initialized."""
        ys, order = torch.sort(y, stable=True)  # ignored samples (y < 0) first
        if len(order) == 0:
            return x.new_zeros(x.shape), order, 1.0, 0
        classes, seg, counts = torch.unique_consecutive(ys, return_inverse=True, return_counts=True)
        p = len(classes)
        labels_counts = torch.cat((classes, counts)).tolist()  # one sync for all sizes
        labels, sizes = labels_counts[:p], labels_counts[p:]
        self.check_labels(labels[-1])
        n_ign = 0
        valid = order
        if labels[0] < 0:  # drop the ignored samples (sorted first) and their "classes"
            j = bisect.bisect_left(labels, 0)
            n_ign = sum(sizes[:j])
            if j == p:
                return x.new_zeros(x.shape), order, 1.0, 0
            ys, valid, seg = ys[n_ign:], order[n_ign:], seg[n_ign:] - j
            classes, counts, sizes = classes[j:], counts[j:], sizes[j:]
        sizes.sort()
        if sizes[-1] <= RANK_LOOP_MAX:
            valid, diff, factor = self._by_rank(x, ys, valid, classes, seg, counts, sizes)
        else:
            diff = x.index_select(0, valid)
            self._by_scan(diff, classes, seg, counts, sizes[-1])
            factor = 1.0
        if n_ign:  # zero rows for the ignored samples, in front
            valid = torch.cat((order[:n_ign], valid))
            diff = torch.cat((diff.new_zeros(n_ign, diff.shape[1]), diff))
        return diff, valid, factor, len(order) - n_ign

    def _by_rank(self, x, ys, order, classes, seg, counts, sizes):
        """The update as a loop over ranks (the k-th sample of each class, all classes at once).

        Rows are put in rank-major order (all first samples, then all second samples, ...),
        classes by decreasing count within a rank, so the classes present at rank r are
        the first n_r of rank r-1. ``cur`` holds each class's running memory; per rank,
        ``x - cur`` (the distance to the memory *before* the sample) is stored in place of
        x and ``cur += m·(x - cur)``. The distance to the memory *after* the sample is
        (1-m) times that, so one returned ``diff`` serves both targets (``factor``).
        Returns ``(order, diff, factor)`` for the labelled samples.
        """
        n, p, m = len(ys), len(sizes), self.momentum
        # sort key: rank·(n+1) - count, stable (ties keep class order)
        starts = counts.cumsum(0).sub_(counts)
        key = torch.add(counts, starts, alpha=n + 1).index_select(0, seg)
        perm = torch.sort(_rank_scale(n, ys.device).sub(key), stable=True)[1]
        order = order.index_select(0, perm)
        diff = x.index_select(0, order)
        cls = ys.index_select(0, perm[:p])  # the classes, by decreasing count
        cur = self.memory.index_select(0, cls)  # the memory before the batch
        if self.initialized is not None:  # x itself for an unset class (then x - cur = 0)
            first = diff[:p]
            known = self.initialized.index_select(0, cls).unsqueeze(1)
            cur.sub_(first).mul_(known).add_(first)
        start = 0
        for rank in range(sizes[-1]):
            n_r = p - bisect.bisect_right(sizes, rank)  # classes with more than `rank` samples
            rows, mem = diff[start : start + n_r], cur[:n_r] if n_r < p else cur
            rows.sub_(mem)
            mem.add_(rows, alpha=m)
            start += n_r
        self.memory.index_copy_(0, cls, cur)
        if self.initialized is not None:
            self.initialized.index_fill_(0, cls, True)
        return order, diff, 1.0 - m if self.after else 1.0

    def _by_scan(self, xs, classes, seg, counts, nmax) -> None:
        """The update as a log-depth scan over class-sorted rows ``xs`` (replaced in place by
        x - target); for batches with long runs of one class."""
        n, d = xs.shape
        m = self.momentum
        ends = counts.cumsum(0)
        starts = ends - counts
        nsteps = (nmax - 1).bit_length() if m < 1.0 else 0
        shifts, steps, pows, weights = _scan_tables(nsteps, m, xs.dtype, xs.device)
        # two ping-pong buffers with `head` zero rows above the samples, so that the scan
        # reads h_(p-s) for every s as a shifted view (the coefficient is 0 where p-s
        # lies outside the class, and the zero rows keep 0·h finite)
        head = shifts[-1] if shifts else 1
        buf = xs.new_empty(2, head + n, d)
        buf[:, :head].zero_()
        bufs = buf.unbind(0)
        tails = (bufs[0][head:], bufs[1][head:])
        h = torch.mul(xs, m, out=tails[0])
        # each class's first sample: lerp(mu_k, x, m), or lerp(., x, 1) = x for an unset class
        x_first = xs.index_select(0, starts)
        known = None
        if self.initialized is not None:
            known = self.initialized.index_select(0, classes).unsqueeze(1)
        mu0 = self.memory.index_select(0, classes)
        weight = weights[0] if known is None else torch.where(known, *weights)
        h.index_copy_(0, starts, torch.lerp(mu0, x_first, weight))
        if nsteps:
            rank = _arange(n, xs.device) - starts.index_select(0, seg)  # 0-based, in class
            coefs = ((rank.unsqueeze(1) >= steps) * pows).unbind(0)  # a^s, or 0 across classes
            for i, s in enumerate(shifts):
                src = bufs[i & 1]
                torch.addcmul(
                    tails[i & 1], src[head - s : head - s + n], coefs[i], out=tails[~i & 1]
                )
        scanned = bufs[nsteps & 1]  # memory after each sample, below the head rows
        # memory after the block: each class's last row (row ends - 1 below the head)
        self.memory.index_copy_(0, classes, scanned[head - 1 :].index_select(0, ends))
        if self.initialized is not None:
            self.initialized.index_fill_(0, classes, True)
        if self.after:
            xs.sub_(tails[nsteps & 1])
        else:  # the memory just before each sample: the previous row of its class, or mu0
            xs.sub_(scanned[head - 1 : head - 1 + n])
            first_diff = x_first.sub_(mu0)
            xs.index_copy_(0, starts, first_diff if known is None else first_diff.mul_(known))


class ARR(nn.Module):
    """Class-wise response memory with the ARR loss.

    Args:
        num_classes: K.
        num_features: d (``None``: inferred from the first batch).
        momentum: m, the weight of the new response.
        target: ``"after"`` or ``"before"`` (see module docstring).
        chunk_size: samples per vectorised block (the memory is carried from block to
            block); bounds the scan's working memory, any size is numerically safe.
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

    def _check(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Validate shapes and size a lazy memory (labels: see :meth:`ClassEMA.check_labels`)."""
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

    def _recurrence(self) -> ClassEMA:
        return ClassEMA(self.memory, self.initialized, self.momentum, self.target == "after",
                        self.chunk_size)  # fmt: skip

    # ------------------------------------------------------------------ update

    @torch.no_grad()
    def update(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Apply the sequential update for the batch; return each sample's target (B, d).

        Rows of ignored samples (label < 0) hold x itself.
        """
        self._check(x, y)
        return self._recurrence().targets(x, y)

    def _diffs(
        self, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, float, int, float | None]:
        """:meth:`ClassEMA.diffs` on this module's memory, after the shape checks."""
        self._check(x, y)
        return self._recurrence().diffs(x, y)

    # ------------------------------------------------------------------ loss

    def forward(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        if not self.training or y is None:
            return x.new_zeros(())
        if y.dtype != torch.int64:
            y = y.long()
        if self.sync and is_distributed():
            all_x, offset = all_gather_cat(x.detach())
            all_y, _ = all_gather_cat(y)
            with torch.no_grad():
                diff, order, factor, _, _ = self._diffs(all_x, all_y)
                diff = _unsort(diff, order)[offset : offset + x.shape[0]]
            order, n_valid, abs_sum = None, int((y >= 0).sum()), None
        else:
            diff, order, factor, n_valid, abs_sum = self._diffs(x.detach(), y)
        # ignored rows have diff 0: they add exactly 0 (and a zero gradient)
        scale = 1.0 / float(max(n_valid, 1) * x.shape[1])
        return _L1OfDiff.apply(x, diff, order, scale, factor, abs_sum)

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, num_features={self.num_features}, "
            f"momentum={self.momentum}, target={self.target!r}"
        )
