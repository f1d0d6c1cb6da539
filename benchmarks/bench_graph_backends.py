"""PyG against DGL backend: one full-batch training step of the GADBench-form GNN.

The model of ``configs/graph_gadbench_*.yaml`` (2 activated convs of 32, a linear head) on a
random undirected graph of Tolokers' size (11,758 nodes, about 1.05 M edges with self-loops,
10 features). Every (model, aggregator, backend) case is timed in this one process, the cases
interleaved round by round, and the report gives the median step time and the DGL / PyG
ratio per case (timings on a shared machine are noisy; the ratio is what to read).

    python benchmarks/bench_graph_backends.py               # 20 rounds
    python benchmarks/bench_graph_backends.py --rounds 5 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from tasks.graph.backends import get_backend
from tasks.graph.models import GNN

CASES = (("gcn", "mean"), ("sage", "mean"), ("sage", "pool"))


def random_graph(num_nodes: int, num_edges: int, seed: int = 0) -> torch.Tensor:
    """``(2, 2 E)`` edge index: ``num_edges`` random pairs and their reverses."""
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(0, num_nodes, (num_edges,), generator=g)
    dst = torch.randint(0, num_nodes, (num_edges,), generator=g)
    return torch.stack([torch.cat([src, dst]), torch.cat([dst, src])])


def step_seconds(model: GNN, x: torch.Tensor, graph, y: torch.Tensor) -> float:
    start = time.perf_counter()
    loss = torch.nn.functional.cross_entropy(model(x, graph), y)
    loss.backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=11_758)
    parser.add_argument("--edges", type=int, default=519_000, help="before adding reverses")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    edge_index = random_graph(args.nodes, args.edges)
    x = torch.randn(args.nodes, 10)
    y = torch.randint(0, 2, (args.nodes,))
    built = {}
    for model, aggr in CASES:
        for name in ("pyg", "dgl"):
            backend = get_backend(name)
            graph = backend.graph(edge_index, args.nodes, model)
            gnn = GNN(backend, model, 10, 32, 2, dropout=0.0, head="linear", aggr=aggr, init="dgl")
            step_seconds(gnn, x, graph, y)  # warm-up
            built[(model, aggr, name)] = (gnn, graph)
    times: dict[tuple[str, str, str], list[float]] = {key: [] for key in built}
    for _ in range(args.rounds):
        for key, (gnn, graph) in built.items():
            times[key].append(step_seconds(gnn, x, graph, y))
    print(f"{args.nodes} nodes, {edge_index.shape[1]} directed edges, {args.threads} thread(s), "
          f"{args.rounds} rounds; median training step (forward + backward)")  # fmt: skip
    print("| model | aggr | PyG ms | DGL ms | DGL / PyG |")
    print("|---|---|---:|---:|---:|")
    for model, aggr in CASES:
        pyg = statistics.median(times[(model, aggr, "pyg")])
        dgl = statistics.median(times[(model, aggr, "dgl")])
        print(f"| {model} | {aggr} | {1e3 * pyg:.1f} | {1e3 * dgl:.1f} | {dgl / pyg:.2f} |")


if __name__ == "__main__":
    main()
