"""Training batches: the whole graph, or neighbour-sampled subgraphs around seed nodes.

A batch is a :class:`GraphBatch`: node features, the backend graph over those
nodes and per-node targets (the seed nodes' labels, -1 elsewhere, so the loss and
ARR/DPA only see labelled seeds). Mini-batches follow PyG ``NeighborLoader``
semantics: the seeds come first, ``fanout[h]`` in-neighbours are sampled for the
nodes reached at hop ``h`` (each node once), and the model runs on the whole
sampled subgraph. Seeds are shuffled per epoch by :class:`dnrt_core.engine.data.EpochSampler`
(seeded, DDP-sharded); DGL's sampling RNG is reseeded per epoch, so runs are
reproducible and resumable.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from dnrt_core.engine.data import EpochSampler

from .backends import Backend

PYG_SAMPLER_HINT = (
    "sampler 'neighbor' with backend 'pyg' needs pyg-lib or torch-sparse "
    "(MAX_JOBS=2 pip install --no-build-isolation torch-scatter==2.1.2 torch-sparse==0.6.18, "
    "10-25 minutes to compile; README: Optional: PyG neighbour sampling); "
    'or use backend dgl (pip install "dnrt[dgl]")'
)


@dataclass
class GraphBatch:
    """Model inputs of one step.

    Attributes:
        x: ``(n, F)`` features of the batch's nodes.
        graph: the backend graph over those ``n`` nodes.
        targets: ``(n,)`` int64 labels of the seed nodes, -1 for the others.
        num_seeds: number of seed nodes (the first ``num_seeds`` rows).
    """

    x: torch.Tensor
    graph: Any
    targets: torch.Tensor
    num_seeds: int


class Batches:
    """A sized iterable over one epoch's batches (``len`` does not sample)."""

    def __init__(self, length: int, make: Callable[[], Iterator[GraphBatch]]):
        self.length = length
        self.make = make

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[GraphBatch]:
        return self.make()


class FullBatch:
    """The whole graph as the single batch of every epoch (one optimiser step per epoch)."""

    def __init__(self, batch: GraphBatch):
        self.batch = batch

    def epoch(self, epoch: int) -> Batches:
        return Batches(1, lambda: iter([self.batch]))


def parse_fanout(fanout: str | int | list[int] | tuple[int, ...]) -> list[int]:
    """``"10,5"`` -> ``[10, 5]`` (hop 1 first; -1 takes all neighbours)."""
    if isinstance(fanout, int):
        return [fanout]
    parts = fanout.split(",") if isinstance(fanout, str) else list(fanout)
    try:
        values = [int(p) for p in parts]
    except (TypeError, ValueError):
        raise ValueError(f"data.fanout must be comma-separated integers, got {fanout!r}") from None
    if not values or any(v == 0 or v < -1 for v in values):
        raise ValueError(f"data.fanout values must be positive (or -1 for all), got {fanout!r}")
    return values


class _SeedOrder:
    def __init__(self, seeds: torch.Tensor, seed: int):
        self.seeds = seeds
        self.sampler = EpochSampler(len(seeds), shuffle=True, seed=seed)

    def __call__(self, epoch: int) -> torch.Tensor:
        self.sampler.set_epoch(epoch)
        return self.seeds[torch.tensor(list(iter(self.sampler)), dtype=torch.long)]

    def num_batches(self, batch_size: int) -> int:
        return -(-len(self.sampler) // batch_size)


def blocks_to_edge_index(blocks: list) -> torch.Tensor:
    """Merge DGL message-flow blocks into one sampled subgraph ``(2, E)`` over the input nodes.

    In DGL blocks the destination nodes are a prefix of the source nodes, so all local
    ids index ``input_nodes``. Each node keeps the in-edges sampled for it at the hop
    closest to the seeds (PyG ``NeighborLoader`` semantics: neighbours sampled once).
    """
    parts = []
    for i, block in enumerate(blocks):
        src, dst = block.edges()
        if i + 1 < len(blocks):
            keep = dst >= blocks[i + 1].num_dst_nodes()
            src, dst = src[keep], dst[keep]
        parts.append(torch.stack([src, dst]))
    return torch.cat(parts, dim=1).long()


class _NeighborBatches:
    """Shared part of the neighbour samplers: seed order per epoch, batch count, and the
    backend graph builder; subclasses prepare the graph (``_prepare``) and sample
    (``_iterate``)."""

    def __init__(
        self,
        backend: Backend,
        model: str,
        x: torch.Tensor,
        targets: torch.Tensor,
        edge_index: torch.Tensor,
        seeds: torch.Tensor,
        fanouts: list[int],
        batch_size: int,
        seed: int,
        num_workers: int = 0,
    ):
        self.backend, self.model = backend, model
        self.order = _SeedOrder(seeds, seed)
        self.batch_size, self.seed, self.num_workers = batch_size, seed, num_workers
        self._prepare(x, targets, edge_index, fanouts)

    def _prepare(
        self, x: torch.Tensor, targets: torch.Tensor, edge_index: torch.Tensor, fanouts: list[int]
    ) -> None:
        raise NotImplementedError

    def _iterate(self, epoch: int) -> Iterator[GraphBatch]:
        raise NotImplementedError

    def epoch(self, epoch: int) -> Batches:
        return Batches(self.order.num_batches(self.batch_size), lambda: self._iterate(epoch))


class DGLNeighborBatches(_NeighborBatches):
    """Mini-batches from ``dgl.dataloading.NeighborSampler``: sampled in this thread
    (reproducible per seed and epoch), or by a ``dgl.dataloading.DataLoader`` with
    ``num_workers`` worker processes."""

    def _prepare(self, x, targets, edge_index, fanouts) -> None:
        import dgl

        self.x, self.targets = x, targets
        self.g = dgl.graph((edge_index[0], edge_index[1]), num_nodes=x.shape[0])
        self.g.create_formats_()  # sampling results depend on the formats present
        # DGL lists fanouts from the input layer: hop 1 (next to the seeds) comes last
        self.sampler = dgl.dataloading.NeighborSampler(list(reversed(fanouts)))

    def _iterate(self, epoch: int) -> Iterator[GraphBatch]:
        import dgl

        dgl.seed(self.seed * 100_003 + epoch)
        seeds, size = self.order(epoch), self.batch_size
        if self.num_workers > 0:  # parallel sampling: fast, but not bit-reproducible
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*CPU affinity.*")
                loader = dgl.dataloading.DataLoader(
                    self.g,
                    seeds,
                    self.sampler,
                    batch_size=size,
                    shuffle=False,
                    drop_last=False,
                    num_workers=self.num_workers,
                )
        else:  # in this thread: the same seed gives the same batches
            loader = (self._sample(seeds[i : i + size]) for i in range(0, len(seeds), size))
        for input_nodes, output_nodes, blocks in loader:
            edge_index = blocks_to_edge_index(blocks)
            n = len(input_nodes)
            targets = torch.full((n,), -1, dtype=torch.long)
            targets[: len(output_nodes)] = self.targets[output_nodes]
            graph = self.backend.graph(edge_index, n, self.model)
            yield GraphBatch(self.x[input_nodes], graph, targets, len(output_nodes))

    def _sample(self, seeds: torch.Tensor) -> tuple:
        """One batch on a single OpenMP thread: DGL seeds every thread's RNG alike, so with
        several threads the sampled neighbours depend on scheduling."""
        from dgl.utils.internal import get_num_threads, set_num_threads

        threads = get_num_threads()
        set_num_threads(1)
        try:
            return self.sampler.sample(self.g, seeds)
        finally:
            set_num_threads(threads)


def pyg_sampler_available() -> bool:
    import torch_geometric.typing as pyg_typing

    return bool(pyg_typing.WITH_PYG_LIB or pyg_typing.WITH_TORCH_SPARSE)


class PyGNeighborBatches(_NeighborBatches):
    """Mini-batches from ``torch_geometric.loader.NeighborLoader`` (needs pyg-lib or
    torch-sparse; checked by the caller with :func:`pyg_sampler_available`)."""

    def _prepare(self, x, targets, edge_index, fanouts) -> None:
        from torch_geometric.data import Data

        self.data = Data(x=x, y=targets, edge_index=edge_index, num_nodes=x.shape[0])
        self.fanouts = fanouts

    def _iterate(self, epoch: int) -> Iterator[GraphBatch]:
        from torch_geometric.loader import NeighborLoader

        seeds = self.order(epoch)
        with warnings.catch_warnings():  # torch-sparse is a supported sampler here
            warnings.filterwarnings("ignore", message=".*without a 'pyg-lib' installation.*")
            loader = NeighborLoader(
                self.data,
                num_neighbors=self.fanouts,
                input_nodes=seeds,
                batch_size=self.batch_size,
                shuffle=False,
                num_workers=self.num_workers,
            )
        for sub in loader:  # samples with the global torch RNG (saved in checkpoints)
            targets = sub.y.clone()
            targets[sub.batch_size :] = -1
            graph = self.backend.graph(sub.edge_index, sub.num_nodes, self.model)
            yield GraphBatch(sub.x, graph, targets, int(sub.batch_size))
