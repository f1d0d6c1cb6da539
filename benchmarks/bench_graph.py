"""Scale benchmark of the graph task on the synthetic DGraphFin-like fraud graph.

1. Full-batch GCN: one training epoch (= forward + backward + optimiser step on the
   whole graph) and one full-graph inference on a 1,000,000-node / 4,000,000-edge
   graph (8,000,000 directed edges after adding reverse edges): time and peak RSS.
2. Neighbour-sampled mini-batch epochs (DGL sampler, fan-out 10,5, 1024 seeds)
   for growing graphs (250k, 500k, 1M nodes): epoch time should grow linearly
   with the number of training nodes (constant time per seed).

Each case runs in its own process so peak memory (``ru_maxrss``) is per case.

    python benchmarks/bench_graph.py                      # everything, as in the report
    python benchmarks/bench_graph.py --quick              # 10x smaller graphs
    python benchmarks/bench_graph.py --case full --nodes 1000000 --backend dgl
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from typing import Any

import torch


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def run_case(
    case: str, nodes: int, backend: str, epochs: int, act: str, arr: bool = False
) -> dict[str, Any]:
    """Build the task at ``nodes`` and time ``epochs`` training epochs (after one warm-up)."""
    from dnrt_core.engine import build
    from dnrt_core.engine.config import build_config
    from tasks.graph import GraphTask

    task = GraphTask()
    overrides = {
        "data.num_nodes": nodes,
        "data.avg_degree": 4.0,
        "data.backend": backend,
        "model.name": "gcn",
        "mech.act": act,
        "mech.arr": arr,
    }
    if case == "minibatch":
        overrides.update(
            {"data.sampler": "neighbor", "data.fanout": "10,5", "data.batch_size": 1024}
        )
    cfg = build_config(task.default_config(), overrides=overrides)
    device = torch.device("cpu")
    start = time.perf_counter()
    built = build(task, cfg, device)
    setup_s = time.perf_counter() - start
    rss_setup = peak_rss_gib()
    model = built.model
    opt = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=5e-4)

    def epoch(e: int) -> tuple[float, int]:
        model.train()
        t0, steps = time.perf_counter(), 0
        for batch in task.train_batches(built.data, e):
            inputs, targets = task.batch_inputs(batch, device)
            out = model(*inputs, targets=targets)
            loss = task.loss(out, targets, built.data) + model.aux_loss()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
        return time.perf_counter() - t0, steps

    times = [epoch(e)[0] for e in range(epochs + (1 if case == "full" else 0))]
    if case == "full":
        times = times[1:]  # the first step allocates the optimiser state
    steps = len(task.train_batches(built.data, 0))
    t0 = time.perf_counter()
    metrics = task.evaluate(model, built.data, "test", device)
    eval_s = time.perf_counter() - t0
    info = built.data.info
    return {
        "case": case,
        "backend": backend,
        "act": act + ("+arr" if arr else ""),
        "nodes": info["num_nodes"],
        "edges": info["num_edges"],
        "train_nodes": info["split_sizes"]["train"],
        "steps_per_epoch": steps,
        "setup_s": round(setup_s, 2),
        "epoch_s": round(min(times), 3),
        "epoch_s_mean": round(sum(times) / len(times), 3),
        "us_per_train_node": round(1e6 * min(times) / info["split_sizes"]["train"], 2),
        "eval_s": round(eval_s, 3),
        "test_auc": round(metrics["auc"], 4),
        "peak_rss_setup_gib": round(rss_setup, 2),
        "peak_rss_gib": round(peak_rss_gib(), 2),
        "threads": torch.get_num_threads(),
    }


def spawn(
    case: str, nodes: int, backend: str, epochs: int, act: str, arr: bool = False
) -> dict[str, Any]:
    cmd = [
        sys.executable,
        __file__,
        "--case",
        case,
        "--nodes",
        str(nodes),
        "--backend",
        backend,
        "--epochs",
        str(epochs),
        "--act",
        act,
    ]
    cmd += ["--arr"] if arr else []
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def table(rows: list[dict[str, Any]], keys: list[str]) -> str:
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=["full", "minibatch"])
    parser.add_argument("--nodes", type=int, default=1_000_000)
    parser.add_argument("--backend", default="pyg", choices=["pyg", "dgl"])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--act", default="relu", help="mechanism, e.g. relu, raa, dpa")
    parser.add_argument("--arr", action="store_true", help="add ARR (e.g. --act raa --arr: DNRT)")
    parser.add_argument("--quick", action="store_true", help="10x smaller graphs")
    args = parser.parse_args()
    if args.case:  # a single case (child process): print one JSON line
        row = run_case(args.case, args.nodes, args.backend, args.epochs, args.act, args.arr)
        print(json.dumps(row))
        return

    scale = 10 if args.quick else 1
    full = [
        spawn("full", 1_000_000 // scale, b, args.epochs, args.act, args.arr)
        for b in ("pyg", "dgl")
    ]
    print("## Full-batch GCN epoch (forward + backward + step), 1 step per epoch\n")
    print(
        table(
            full,
            [
                "backend",
                "act",
                "nodes",
                "edges",
                "setup_s",
                "epoch_s",
                "epoch_s_mean",
                "eval_s",
                "peak_rss_setup_gib",
                "peak_rss_gib",
                "threads",
            ],
        )
    )
    mini = [
        spawn("minibatch", n // scale, "dgl", 1, args.act, args.arr)
        for n in (250_000, 500_000, 1_000_000)
    ]
    print("\n## Mini-batch epoch (DGL NeighborSampler, fan-out 10,5, batch 1024) vs size\n")
    print(
        table(
            mini,
            [
                "nodes",
                "edges",
                "train_nodes",
                "steps_per_epoch",
                "epoch_s",
                "us_per_train_node",
                "peak_rss_gib",
            ],
        )
    )


if __name__ == "__main__":
    main()
