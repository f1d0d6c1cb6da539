"""Data-loader helpers: epoch-seeded shuffling (exact resume) and DDP sharding."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..mechanisms.distributed import rank, world_size


class EpochSampler(Sampler[int]):
    """Shuffles with a generator seeded by ``(seed, epoch)`` and shards across DDP ranks.

    The order depends only on the seed and the epoch, so a resumed run sees the
    same batches as an uninterrupted one. Call :meth:`set_epoch` before each epoch.
    """

    def __init__(self, dataset_len: int, *, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False, weights: torch.Tensor | None = None,
                 shard: bool = True):  # fmt: skip
        self.n = dataset_len
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.weights = weights  # optional per-sample weights: sampling with replacement
        self.replicas, self.rank = (world_size(), rank()) if shard else (1, 0)
        if drop_last:
            self.per_rank = self.n // self.replicas
        else:
            self.per_rank = math.ceil(self.n / self.replicas)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        if self.weights is not None:
            order = torch.multinomial(self.weights, self.n, replacement=True, generator=gen)
        elif self.shuffle:
            order = torch.randperm(self.n, generator=gen)
        else:
            order = torch.arange(self.n)
        total = self.per_rank * self.replicas
        if total > self.n:  # pad by wrapping so every rank gets the same count
            order = torch.cat([order, order[: total - self.n]])
        return iter(order[self.rank : total : self.replicas].tolist())

    def __len__(self) -> int:
        return self.per_rank


def indices_sha256(indices) -> str:
    """SHA-256 (hex) of a subset's indices, sorted ascending, as int64 little-endian bytes:
    ``hashlib.sha256(np.sort(idx).astype("<i8").tobytes())``."""
    idx = np.sort(np.asarray(indices).astype("<i8", casting="safe").ravel())
    return hashlib.sha256(idx.tobytes()).hexdigest()


DROP_LAST = (None, True, False, "odd")


def resolve_drop_last(setting: bool | str | None, n: int, batch_size: int, train: bool) -> bool:
    """The ``drop_last`` a loader of ``n`` samples uses (see :func:`make_loader`)."""
    if setting not in DROP_LAST:
        raise ValueError(f"drop_last must be true, false, null or 'odd', got {setting!r}")
    if setting is None:
        return train and n >= 2 * batch_size
    if setting == "odd":
        return bool(n % 2 or batch_size % 2)
    return bool(setting)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    train: bool,
    seed: int = 0,
    num_workers: int = 0,
    drop_last: bool | str | None = None,
    weights: torch.Tensor | None = None,
) -> DataLoader:
    """A DataLoader with :class:`EpochSampler`: training loaders are shuffled per epoch and
    sharded under DDP; evaluation loaders keep file order and give every rank the whole set.

    ``drop_last``: ``None`` drops a ragged last training batch when there are at least two
    batches; ``"odd"`` drops it only when the set size or the batch size is odd (the released
    QTClassification ``main.py``; CIFAR's 50,000 at batch 256 keep all 196 batches).
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    drop_last = resolve_drop_last(drop_last, len(dataset), batch_size, train)
    sampler = EpochSampler(len(dataset), shuffle=train, seed=seed, weights=weights, shard=train)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=drop_last,
        persistent_workers=False,
        generator=torch.Generator().manual_seed(seed),
    )


def stratified_split(labels, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded, class-stratified split of ``labels`` (N,) into (train, val) index tensors.

    Class k gives ``round(fraction · n_k)`` samples to validation, but always keeps at least
    one in training (a class with one sample gives none). Both index tensors are sorted.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation fraction must be in (0, 1), got {fraction}")
    labels = torch.as_tensor(labels).long()
    gen = torch.Generator().manual_seed(int(seed) * 7919 + 17)
    train_parts, val_parts = [], []
    for k in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == k).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        n_val = min(int(round(fraction * len(idx))), len(idx) - 1)
        val_parts.append(idx[:n_val])
        train_parts.append(idx[n_val:])
    empty = torch.zeros(0, dtype=torch.long)
    train = torch.cat(train_parts).sort().values if train_parts else empty
    val = torch.cat(val_parts).sort().values if val_parts else empty
    return train, val


def check_val_fraction(value) -> None:
    """``data.val_fraction`` must be ``None``/0 (no validation split) or a number in (0, 1)."""
    if value in (None, 0, 0.0):
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ValueError(f"data.val_fraction must be in [0, 1), got {value!r}")
