"""The ``graph`` task: node classification / financial-fraud detection with GCN or GraphSAGE.

``dnrt train graph`` trains on a seeded synthetic DGraphFin-like fraud graph by
default; ``--dataset dgraphfin|reddit|tolokers|cora|citeseer|minesweeper|yelpchi|amazon
--data-dir D`` reads real data. Full-batch training takes one optimiser step per epoch
(the whole graph is the batch); ``data.sampler: neighbor`` trains on neighbour-sampled
subgraphs. Evaluation is always full-batch. Binary data sets are scored and selected
by ROC-AUC (fraud vs normal; AP and Rec@K are logged beside it), multi-class ones by
top-1 accuracy.

GADBench's protocol (``configs/graph_gadbench_<dataset>.yaml``) is built from options
that also work alone: ``data.split_ratios`` / ``data.split_seed`` (stratified random
splits), ``data.self_loops``, ``model.head: linear`` (a linear classifier after L
activated convs), ``model.aggr`` (SAGE mean / max / pool) and the engine's
``train.select_metric`` / ``train.patience``.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dnrt_core.engine import ConfigOption, Task, TaskData
from dnrt_core.errors import unknown_name_error

from .backends import BACKENDS, MODELS, SAGE_AGGRS, get_backend
from .datasets import LOADERS, load_graph
from .graph_data import (
    FEATURE_NORMS,
    SELF_LOOPS,
    GraphData,
    check_graph,
    check_split_ratios,
    prepare,
    resplit,
)
from .metrics import node_metrics
from .models import DPA_SITES, GNN, HEADS, INITS
from .sampling import (
    PYG_SAMPLER_HINT,
    DGLNeighborBatches,
    FullBatch,
    GraphBatch,
    PyGNeighborBatches,
    parse_fanout,
    pyg_sampler_available,
)

SAMPLERS = ("full", "neighbor")


class GraphTask(Task):
    """GCN / GraphSAGE node classification on PyG or DGL (see the module docstring)."""

    name = "graph"
    description = "node classification / fraud detection: GCN, GraphSAGE on PyG or DGL (AUC)"
    primary_metric = "auc"  # set per data set in setup: binary -> auc, multi-class -> top1
    options = (
        ConfigOption("dataset", "data.dataset", str, f"Graph: {', '.join(LOADERS)}."),
        ConfigOption("model", "model.name", str, f"GNN: {', '.join(MODELS)}."),
        ConfigOption("backend", "data.backend", str, f"Graph library: {', '.join(BACKENDS)}."),
        ConfigOption(
            "sampler", "data.sampler", str,
            "full (whole graph per step) or neighbor (sampled subgraphs).",
        ),
        ConfigOption("fanout", "data.fanout", str, "Neighbours sampled per hop, e.g. 10,5."),
    )  # fmt: skip

    def default_config(self) -> dict[str, Any]:
        return {
            "data": {
                "dataset": "synthetic",
                "backend": "pyg",  # pyg | dgl
                "sampler": "full",  # full | neighbor
                "fanout": "10,5",  # neighbours sampled per hop, hop 1 first
                "batch_size": 1024,  # seed nodes per mini-batch (sampler: neighbor)
                "num_workers": 0,
                "to_undirected": True,  # add reverse edges
                "feature_norm": "auto",  # auto | standardize | row | none
                "split": 0,  # official split index (tolokers, minesweeper)
                "data_seed": 0,  # synthetic graph and the stratified 40/20/40 splits
                # [train, val(, test)] shares: a stratified random split of all target
                # nodes (GADBench's) replaces the data set's own; seeded by split_seed
                "split_ratios": None,
                "split_seed": None,  # None = data_seed
                "self_loops": "keep",  # keep | add (exactly one per node) | remove
                "relation": "homo",  # CARE-GNN relation (homo, net_rur, net_upu, ...)
                # synthetic fraud graph
                "num_nodes": 100_000,
                "avg_degree": 4.0,
                "fraud_rate": 0.015,
                "background_rate": 0.6,
                "homophily": 0.3,
                "num_features": 17,
                "feature_signal": 1.0,
            },
            "model": {
                "name": "gcn",  # gcn | sage
                "hidden": 64,
                "num_layers": 2,
                "dropout": 0.5,
                "batch_norm": False,
                "head": "conv",  # conv (last layer is a graph conv) | linear (after L convs)
                "aggr": "mean",  # GraphSAGE aggregator: mean | max | pool
                "init": "pyg",  # pyg | dgl (DGL's SAGEConv weight init)
            },
            "train": {
                "epochs": 100,
                "lr": 0.01,
                "weight_decay": 5e-4,
                "opt": "adam",
                "sched": "cosine",
                "warmup_epochs": 0,
                "min_lr": 1e-5,
                "clip_grad": None,
                "class_weight": False,  # balanced class weights in the cross-entropy
            },
            "mech": {
                "act": "relu",
                "arr_sites": None,  # None: mech.arr_placement (default every_layer = hidden.*)
                "arr_pool": "node",
                "dpa_sites": DPA_SITES,
                "dpa_interval": 1,
            },
        }

    def validate_config(self, cfg: dict[str, Any]) -> None:
        d, m = cfg["data"], cfg["model"]
        named = (
            ("graph dataset", d["dataset"], LOADERS),
            ("graph model", m["name"], MODELS),
            ("graph backend", d["backend"], BACKENDS),
            ("graph sampler", d["sampler"], SAMPLERS),
            ("feature_norm", d["feature_norm"], FEATURE_NORMS),
            ("self_loops", d["self_loops"], SELF_LOOPS),
            ("model.head", m["head"], HEADS),
            ("model.init", m["init"], INITS),
            ("model.aggr", m["aggr"], SAGE_AGGRS),
        )
        for label, value, valid in named:
            if value not in valid:
                raise unknown_name_error(label, value, list(valid))
        if d["split_ratios"] is not None:
            check_split_ratios(d["split_ratios"])
        if d["split_seed"] is not None and not isinstance(d["split_seed"], int):
            raise ValueError(f"data.split_seed must be an integer, got {d['split_seed']!r}")
        for key in ("num_layers", "hidden"):
            if not isinstance(m[key], int) or m[key] < 1:
                raise ValueError(f"model.{key} must be a positive integer, got {m[key]!r}")
        if not 0.0 <= float(m["dropout"]) < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1), got {m['dropout']!r}")
        if not isinstance(d["split"], int) or d["split"] < 0:
            raise ValueError(f"data.split must be a non-negative integer, got {d['split']!r}")
        fanouts = parse_fanout(d["fanout"])
        if d["sampler"] == "neighbor":
            if len(fanouts) != m["num_layers"]:
                raise ValueError(
                    f"data.fanout {d['fanout']!r} has {len(fanouts)} hops but "
                    f"model.num_layers is {m['num_layers']}"
                )
            if d["backend"] == "pyg" and not pyg_sampler_available():
                raise ValueError(PYG_SAMPLER_HINT)
        get_backend(d["backend"])  # one-line error when DGL is missing

    # ------------------------------------------------------------------ data

    def setup(self, cfg: dict[str, Any], *, device: torch.device) -> TaskData:
        self.validate_config(cfg)
        d = cfg["data"]
        model_name = cfg["model"]["name"]
        backend = get_backend(d["backend"])
        graph = load_graph(d["dataset"], d.get("data_dir"), d)
        if d["split_ratios"] is not None:
            seed = d["data_seed"] if d["split_seed"] is None else d["split_seed"]
            graph = resplit(graph, d["split_ratios"], int(seed))
        check_graph(graph, f"graph {graph.name}")  # before any step: NaN, empty/overlapping splits
        graph = prepare(
            graph,
            to_undirected=bool(d["to_undirected"]),
            feature_norm=d["feature_norm"],
            self_loops=d["self_loops"],
        )
        k = graph.num_classes
        self.primary_metric = "auc" if k == 2 else "top1"
        targets = graph.train_targets()
        x = graph.x.to(device)
        full_graph = backend.graph(graph.edge_index, graph.num_nodes, model_name).to(device)
        if d["sampler"] == "full":
            train = FullBatch(GraphBatch(x, full_graph, targets.to(device), len(graph.train_idx)))
        else:
            cls = DGLNeighborBatches if backend.name == "dgl" else PyGNeighborBatches
            train = cls(
                backend,
                model_name,
                x=graph.x,
                targets=targets,
                edge_index=graph.edge_index,
                seeds=graph.train_idx,
                fanouts=parse_fanout(d["fanout"]),
                batch_size=int(d["batch_size"]),
                seed=int(cfg["seed"]),
                num_workers=int(d["num_workers"]),
            )
        weight = None
        if cfg["train"].get("class_weight"):
            counts = torch.tensor(graph.class_counts("train"), dtype=torch.float)
            weight = (counts.sum() / (k * counts.clamp(min=1))).to(device)
        return TaskData(
            num_classes=k,
            train=train,
            splits={s: graph.split(s) for s in ("train", "val", "test")},
            info=self._info(graph, cfg),
            state={
                "graph": graph,
                "backend": backend,
                "x": x,
                "full_graph": full_graph,
                "labels": graph.y.to(device),
                "class_weight": weight,
            },
        )

    @staticmethod
    def _info(graph: GraphData, cfg: dict[str, Any]) -> dict[str, Any]:
        targets = graph.y[graph.is_target()]
        info = {
            "dataset": graph.name,
            "num_nodes": graph.num_nodes,
            "num_edges": graph.num_edges,
            "num_features": int(graph.x.shape[1]),
            "num_classes": graph.num_classes,
            "split_sizes": {s: int(graph.split(s).numel()) for s in ("train", "val", "test")},
            "class_counts": graph.class_counts("train"),
            "backend": cfg["data"]["backend"],
            "sampler": cfg["data"]["sampler"],
            "feature_norm": graph.feature_norm,
            **graph.info,
        }
        if graph.num_classes == 2:
            info["positive_rate"] = round(float((targets == 1).float().mean()), 5)
        return info

    def train_batches(self, data: TaskData, epoch: int):
        return data.train.epoch(epoch)

    def batch_inputs(self, batch: GraphBatch, device: torch.device) -> tuple[tuple, torch.Tensor]:
        graph = batch.graph if batch.graph.device == device else batch.graph.to(device)
        return (batch.x.to(device), graph), batch.targets.to(device)

    # ------------------------------------------------------------------ model

    def build_model(self, cfg: dict[str, Any], data: TaskData) -> nn.Module:
        m = cfg["model"]
        graph: GraphData = data.state["graph"]
        return GNN(
            data.state["backend"],
            m["name"],
            int(graph.x.shape[1]),
            int(m["hidden"]),
            data.num_classes,
            num_layers=int(m["num_layers"]),
            dropout=float(m["dropout"]),
            batch_norm=bool(m["batch_norm"]),
            act_layer=nn.ReLU,
            head=m["head"],
            aggr=m["aggr"],
            init=m["init"],
        )

    def tune_options(self, cfg: dict[str, Any], data: TaskData) -> dict[str, Any]:
        """ARR sites / pool and DPA sites come from ``mech`` (defaults: the ``gnn`` family's
        ``every_layer`` placement = ``hidden.*``, ``node``; ``hidden.*.act``)."""
        return {"family": "gnn"}

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor, data: TaskData) -> torch.Tensor:
        return F.cross_entropy(
            outputs,
            targets,
            weight=data.state.get("class_weight"),
            ignore_index=-1,
            label_smoothing=float(data.state.get("label_smoothing", 0.0)),
        )

    # ------------------------------------------------------------------ evaluation

    @torch.no_grad()
    def full_logits(self, model: nn.Module, data: TaskData) -> torch.Tensor:
        """``(N, K)`` logits of a full-graph eval forward, cached until a weight changes."""
        key = (
            id(model),
            tuple(
                (t.data_ptr(), t._version)
                for t in itertools.chain(model.parameters(), model.buffers())
            ),
        )
        cached = data.state.get("_logits")
        if cached is not None and cached[0] == key:
            return cached[1]
        was_training = model.training
        model.eval()
        try:
            logits = model(data.state["x"], data.state["full_graph"]).float()
        finally:
            model.train(was_training)
        data.state["_logits"] = (key, logits)
        return logits

    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, data: TaskData, split: str, device: torch.device
    ) -> dict[str, float]:
        """``auc``, ``ap``, ``top1`` (percent) and ``loss`` on the split's target nodes."""
        idx = data.splits[split].to(data.state["labels"].device)
        logits = self.full_logits(model, data)
        return node_metrics(logits[idx], data.state["labels"][idx], data.num_classes)

    def summary_extra(self, data: TaskData, metrics: dict[str, float]) -> dict[str, Any]:
        return dict(data.info)

    def format_report(self, metrics: dict[str, float]) -> str:
        order = (
            ("auc", "ap", "reck", "top1", "loss")
            if self.primary_metric == "auc"
            else ("top1", "auc", "ap", "loss")
        )
        parts = []
        for k in order:
            if metrics.get(k) is not None:
                parts.append(f"{k}={metrics[k]:.2f}" if k == "top1" else f"{k}={metrics[k]:.4f}")
        return "  ".join(parts)
