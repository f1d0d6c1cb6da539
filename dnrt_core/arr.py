"""Aggregated Response Regularization (ARR), DNRT paper eqs. 3-5.

A per-class memory ``mu`` (K × d) of aggregated responses. For each labelled
training sample (x, k), taken **in batch order, one after another**:

    mu_k <- x                       if mu_k is unset
    mu_k <- (1 - m)·mu_k + m·x      otherwise
    loss  = |x - mu_k|_1 / d        (mu_k detached)

``target="after"`` (default) compares x with mu_k after this sample's update, as
the released code does; ``target="before"`` uses mu_k before it (the paper's
eq. 4; a first-seen class then contributes zero).

The sequential recursion is evaluated in closed form: for the j-th sample of
class k within a chunk (0-based rank j, previous memory mu0),

    mu_j = (1-m)^(j+1)·mu0 + sum_{l<=j} m·(1-m)^(j-l)·x_l

(with the first sample's weight (1-m)^j and no mu0 term when mu_k is unset),
i.e. one lower-triangular (n × n) weight matrix times the chunk's responses.
Chunks of ``chunk_size`` samples are processed in order, so memory stays
O(chunk_size² + n·d) even for a million labelled nodes.
"""

from __future__ import annotations

import torch
from torch import nn

from .distributed import all_gather_cat, is_distributed

ARR_TARGETS = ("after", "before")


class ARR(nn.Module):
    """Class-wise response memory with the ARR loss.

    Args:
        num_classes: K.
        num_features: d (``None``: inferred from the first batch).
        momentum: m, the weight of the new response.
        target: ``"after"`` or ``"before"`` (see module docstring).
        chunk_size: samples per vectorised block.
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
        if x.dim() != 2:
            raise ValueError(f"ARR expects aggregated responses (B, d), got {tuple(x.shape)}")
        if y.shape != (x.shape[0],):
            raise ValueError(f"ARR labels must have shape ({x.shape[0]},), got {tuple(y.shape)}")
        if y.numel() and int(y.max()) >= self.num_classes:
            raise ValueError(
                f"label {int(y.max())} out of range for ARR with num_classes={self.num_classes}"
            )
        if self.memory.shape[1] == 0:
            self.memory = self.memory.new_zeros(self.num_classes, x.shape[1])
        elif x.shape[1] != self.memory.shape[1]:
            raise ValueError(f"ARR memory has d={self.memory.shape[1]}, response has d={x.shape[1]}")

    @torch.no_grad()
    def update(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Apply the sequential update for the batch; return each sample's target (B, d).

        Rows of ignored samples (label < 0) hold x itself.
        """
        x = x.detach().to(self.memory.dtype)
        y = y.long()
        self._check(x, y)
        targets = torch.empty_like(x)
        for start in range(0, x.shape[0], self.chunk_size):
            sl = slice(start, start + self.chunk_size)
            targets[sl] = self._update_chunk(x[sl], y[sl])
        return targets

    def _update_chunk(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        valid = y >= 0
        if not bool(valid.any()):
            return x.clone()
        yc = y.clamp(min=0)
        idx = torch.arange(n, device=x.device)
        # same[i, l]: sample l precedes-or-is i and shares its (valid) class
        same = (yc[:, None] == yc[None, :]) & valid[:, None] & valid[None, :]
        same &= idx[None, :] <= idx[:, None]
        rank = same.sum(dim=1) - 1  # 0-based position of i among its class in the chunk
        lag = (rank[:, None] - rank[None, :]).clamp(min=0)
        decay = 1.0 - self.momentum
        base = torch.full((), decay, dtype=x.dtype, device=x.device)
        known = self.initialized[yc] & valid
        weights = self.momentum * torch.pow(base, lag.to(x.dtype))
        # a first-seen class takes its first sample as the memory: weight (1-m)^rank_i
        first = (rank == 0)[None, :] & ~known[:, None]
        weights = torch.where(first, torch.pow(base, rank.to(x.dtype))[:, None], weights)
        weights = weights * same.to(x.dtype)
        prior = self.memory[yc]
        prior_weight = torch.where(known, torch.pow(base, (rank + 1).to(x.dtype)), 0.0)
        after = weights @ x + prior_weight[:, None] * prior
        after = torch.where(valid[:, None], after, x)

        if self.target == "after":
            target = after
        else:
            # the memory just before sample i: the previous same-class sample's "after",
            # or the stored memory for a class's first sample (x itself when unset)
            prev_mask = same & (idx[None, :] < idx[:, None])
            has_prev = prev_mask.any(dim=1)
            prev = torch.where(prev_mask, idx[None, :], -1).max(dim=1).values.clamp(min=0)
            target = torch.where(has_prev[:, None], after[prev], torch.where(known[:, None], prior, x))
            target = torch.where(valid[:, None], target, x)

        # the memory after the chunk: each present class takes its last sample's "after"
        counts = torch.zeros(self.num_classes, dtype=torch.long, device=x.device)
        counts.index_add_(0, yc[valid], torch.ones_like(yc[valid]))
        last = valid & (rank == counts[yc] - 1)
        self.memory[yc[last]] = after[last]
        self.initialized[yc[last]] = True
        return target

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if not self.training or y is None:
            return x.new_zeros(())
        y = y.long()
        if self.sync and is_distributed():
            all_x, offset = all_gather_cat(x.detach())
            all_y, _ = all_gather_cat(y)
            targets = self.update(all_x, all_y)[offset : offset + x.shape[0]]
        else:
            targets = self.update(x, y)
        valid = y >= 0
        if not bool(valid.any()):
            return x.sum() * 0.0
        per_sample = (x[valid] - targets[valid].to(x.dtype)).abs().mean(dim=1)
        return per_sample.mean()

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, num_features={self.num_features}, "
            f"momentum={self.momentum}, target={self.target!r}"
        )
