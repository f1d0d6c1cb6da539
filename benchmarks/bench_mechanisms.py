"""Benchmarks for dnrt_core's mechanisms (not collected by pytest).

    .venv/bin/python benchmarks/bench_mechanisms.py            # everything, 2 threads
    .venv/bin/python benchmarks/bench_mechanisms.py --only arr vit --repeats 9

Sections (all candidates of a table run side by side in one process, repeats are
interleaved across candidates, the reported time is the median):

* ``arr``:    ARR update + loss at batch 256, d 192, 100 classes vs a per-sample numpy loop
              like the released code (target: >= 5x faster); with the C kernel and with
              the tensor-op path (``DNRT_CPU_KERNELS=0``).
* ``vit``:    ViT-Tiny (32 px, patch 4, batch 64) training step and inference: stock GELU,
              RAA, RAA + ARR (``tune(act="raa", arr=True)``), the same without the C kernels,
              ReLU, DPA (targets: RAA+ARR <= 1.08x train, <= 1.03x inference of GELU).
* ``resnet``: CIFAR ResNet-18 (torchvision resnet18, num_classes=10, 32 px, batch 64): ReLU,
              GELU, RAA, RAA-ReLU, DPA.
* ``raa``:    the RAA activation alone (fused Function) vs its base, forward / forward+backward.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from dnrt_core import ARR, tune
from dnrt_core.kernels import loader as cpu_kernels
from dnrt_core.mechanisms.raa_fused import RAAFunction


def _kernels(flag: bool | None, fn: Callable[[], object]) -> Callable[[], object]:
    """``fn`` run with the C kernels forced on/off (``None``: as configured)."""
    if flag is None:
        return fn

    def run():
        cpu_kernels.set_enabled(flag)
        try:
            return fn()
        finally:
            cpu_kernels.set_enabled(None)

    return run


def _median_interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int):
    """Run every candidate once per round (round-robin), ``repeats`` timed rounds.

    Returns {name: (median wall seconds, median process-CPU seconds)}. The CPU time
    does not count time the process waits for a core, so on a shared machine it is the
    steadier of the two (with several threads it also counts their spin-waiting).
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    return {k: (statistics.median(wall[k]), statistics.median(cpu[k])) for k in fns}


def _table(title: str, rows: list[tuple[str, ...]], header: tuple[str, ...]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n### {title}\n")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) + " |")


# --------------------------------------------------------------------------- ARR


class NumpyLoopARR:
    """The released code's per-sample loop (numpy): set or blend the class memory, L1 loss."""

    def __init__(self, num_classes: int, d: int, momentum: float = 0.1):
        self.memory = np.zeros((num_classes, d), dtype=np.float32)
        self.initialized = np.zeros(num_classes, dtype=bool)
        self.m = momentum

    def __call__(self, x: np.ndarray, y: np.ndarray) -> float:
        total = 0.0
        d = x.shape[1]
        for i in range(len(y)):
            k = y[i]
            if not self.initialized[k]:
                self.memory[k] = x[i]
                self.initialized[k] = True
            else:
                self.memory[k] = (1 - self.m) * self.memory[k] + self.m * x[i]
            total += np.abs(x[i] - self.memory[k]).sum() / d
        return total / len(y)


def bench_arr(repeats: int) -> None:
    batch, d, classes = 256, 192, 100
    g = torch.Generator().manual_seed(0)
    data = [
        (torch.randn(batch, d, generator=g), torch.randint(0, classes, (batch,), generator=g))
        for _ in range(16)
    ]
    arr = ARR(classes, d).train()
    arr_ops = ARR(classes, d).train()
    loop = NumpyLoopARR(classes, d)
    # same numbers first (sanity): identical memory and loss after a few batches
    for x, y in data[:4]:
        ours = float(arr(x, y))
        ours_ops = float(_kernels(False, lambda x=x, y=y: arr_ops(x, y))())
        theirs = loop(x.numpy(), y.numpy())
        assert abs(ours - theirs) < 1e-4 and abs(ours_ops - theirs) < 1e-4, (ours, theirs)
    assert np.allclose(arr.memory.numpy(), loop.memory, atol=1e-5)
    assert np.allclose(arr_ops.memory.numpy(), loop.memory, atol=1e-5)

    state = {"i": 0}
    x_grad = [x.clone().requires_grad_(True) for x, _ in data]

    def ours():
        i = state["i"] = (state["i"] + 1) % len(data)
        return arr(data[i][0], data[i][1])

    def ours_backward():
        i = state["i"] = (state["i"] + 1) % len(data)
        arr(x_grad[i], data[i][1]).backward()

    def ops():
        i = state["i"] = (state["i"] + 1) % len(data)
        return arr_ops(data[i][0], data[i][1])

    def numpy_loop():
        i = state["i"] = (state["i"] + 1) % len(data)
        return loop(data[i][0].numpy(), data[i][1].numpy())

    med = _median_interleaved(
        {
            "numpy loop": numpy_loop,
            "ARR": ours,
            "ARR + backward": ours_backward,
            "ARR, tensor ops": _kernels(False, ops),
        },
        repeats=repeats * 20,
        warmup=20,
    )
    base_wall, base_cpu = med["numpy loop"]
    rows = [
        (k, f"{w * 1e3:.3f}", f"{base_wall / w:.2f}x", f"{c * 1e3:.3f}", f"{base_cpu / c:.2f}x")
        for k, (w, c) in med.items()
    ]
    _table(
        f"ARR update + loss, batch {batch}, d {d}, {classes} classes (median of {repeats * 20})",
        rows,
        ("implementation", "wall ms", "speed-up", "CPU ms", "speed-up (CPU)"),
    )


# --------------------------------------------------------------------------- models


def _vit(**kw):
    import timm

    return timm.create_model(
        "vit_tiny_patch16_224", img_size=32, patch_size=4, num_classes=10, **kw
    )


def _resnet():
    import torchvision

    return torchvision.models.resnet18(num_classes=10)


def _build(factory, act: str | None, arr: bool, x: torch.Tensor):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = tune(factory(), act=act, arr=arr or None)
        model.materialize(x)
    return model


def _unpack(config):
    """(label, act, arr, baseline, kernels): ``kernels`` False runs without the C kernels."""
    return (*config, None) if len(config) == 4 else config


def bench_models(name: str, factory, configs, repeats: int, batch: int) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (batch,), generator=g)
    configs = [_unpack(c) for c in configs]
    models = {label: _build(factory, act, arr, x) for label, act, arr, _, _ in configs}
    kernels = {label: flag for label, _, _, _, flag in configs}
    opts = {k: torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9) for k, m in models.items()}

    def train_step(label):
        model, opt = models[label], opts[label]

        def run():
            model.train()
            out = model(x, targets=y)
            loss = F.cross_entropy(out, y) + model.aux_loss()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        return run

    def infer(label):
        model = models[label]

        def run():
            model.eval()
            with torch.inference_mode():
                model(x)

        return run

    train = _median_interleaved(
        {k: _kernels(kernels[k], train_step(k)) for k in models}, repeats, warmup=2
    )
    inference = _median_interleaved(
        {k: _kernels(kernels[k], infer(k)) for k in models}, repeats * 2, warmup=2
    )
    rows = []
    for label, _, _, baseline, _ in configs:
        row = [label]
        for timings in (train, inference):
            wall, cpu = timings[label]
            row += [
                f"{wall * 1e3:.1f}",
                f"{wall / timings[baseline][0]:.3f}x",
                f"{cpu * 1e3:.1f}",
                f"{cpu / timings[baseline][1]:.3f}x",
            ]
        rows.append((*row, baseline))
    _table(
        f"{name}, batch {batch}: training step (median of {repeats}) and inference "
        f"(median of {repeats * 2}), ms",
        rows,
        (
            "mechanism",
            "train wall",
            "ratio",
            "train CPU",
            "ratio",
            "infer wall",
            "ratio",
            "infer CPU",
            "ratio",
            "vs",
        ),  # fmt: skip
    )


VIT_CONFIGS = [  # label, act, arr, baseline label[, C kernels on/off]
    ("gelu (stock)", None, False, "gelu (stock)"),
    ("raa", "raa", False, "gelu (stock)"),
    ("raa+arr (DNRT)", "raa", True, "gelu (stock)"),
    ("DNRT, tensor ops", "raa", True, "gelu (stock)", False),
    ("relu", "relu", False, "relu"),
    ("dpa", "dpa", False, "relu"),
]
RESNET_CONFIGS = [
    ("relu (stock)", None, False, "relu (stock)"),
    ("gelu", "gelu", False, "gelu"),
    ("raa", "raa", False, "gelu"),
    ("raa_relu", "raa_relu", False, "relu (stock)"),
    ("dpa", "dpa", False, "relu (stock)"),
]


# --------------------------------------------------------------------------- RAA alone


def bench_raa(repeats: int) -> None:
    cases = [
        ("ViT MLP (64, 65, 768), gelu", (64, 65, 768), 2, "gelu", F.gelu),
        ("CNN map (64, 64, 32, 32), relu", (64, 64, 32, 32), 1, "relu", F.relu),
        ("CNN map (64, 64, 32, 32), gelu", (64, 64, 32, 32), 1, "gelu", F.gelu),
    ]
    rows = []
    for label, shape, dim, base, fn in cases:
        x = torch.randn(*shape, requires_grad=True)
        w = (0.01 * torch.randn(shape[dim])).requires_grad_(True)
        b = torch.zeros(1, requires_grad=True)
        g = torch.randn(*shape)

        def raa_f(x=x, w=w, b=b, dim=dim, base=base):
            return RAAFunction.apply(x, w, b, dim, base)

        def base_f(x=x, fn=fn):
            return fn(x)

        fwd = _median_interleaved(
            {"raa": raa_f, "ops": _kernels(False, raa_f), "base": base_f}, repeats * 2, warmup=2
        )
        both = _median_interleaved(
            {
                "raa": lambda f=raa_f, g=g: f().backward(g),
                "ops": _kernels(False, lambda f=raa_f, g=g: f().backward(g)),
                "base": lambda f=base_f, g=g: f().backward(g),
            },
            repeats * 2,
            warmup=2,
        )
        rows.append(
            (label, *(f"{t[k][1] * 1e3:.2f}" for t in (fwd, both) for k in ("base", "raa", "ops")))
        )
    _table(
        "RAA activation alone vs its base (process CPU ms, median; raa: C kernel, ops: tensor ops)",
        rows,
        ("input", "base fwd", "raa fwd", "ops fwd", "base fwd+bwd", "raa fwd+bwd", "ops fwd+bwd"),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--only", nargs="*", default=["arr", "raa", "vit", "resnet"])
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",) * 3
    print(
        f"# dnrt mechanism benchmarks — {datetime.date.today()} — torch {torch.__version__}, "
        f"{args.threads} threads, {os.cpu_count()} CPUs ({platform.processor() or 'cpu'}), "
        f"python {sys.version.split()[0]}, load average at start {load}"
    )
    print(f"# C kernels: {cpu_kernels.status()}")
    if "arr" in args.only:
        bench_arr(args.repeats)
    if "raa" in args.only:
        bench_raa(args.repeats)
    if "vit" in args.only:
        bench_models("ViT-Tiny 32px patch 4", _vit, VIT_CONFIGS, args.repeats, args.batch)
    if "resnet" in args.only:
        bench_models("ResNet-18 (torchvision) 32px", _resnet, RESNET_CONFIGS, args.repeats,
                     args.batch)  # fmt: skip
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",) * 3
    print(f"\nload average at end {load}")


if __name__ == "__main__":
    main()
