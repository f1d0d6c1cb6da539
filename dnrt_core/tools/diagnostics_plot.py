"""The figure of ``train.diagnostics`` runs (``dnrt plot diagnostics``).

One row per argument (a sweep folder, e.g. ReLU and DNRT runs of one model), four panels:
the response RMS at the ARR sites, the ARR / task gradient-norm ratio, the cosine between
the two gradients (all per epoch) and the predicted-class histogram of the last evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .plots import _auto_labels, _run_folders, _summary, read_metrics

#: at most this many sites get a line each; more are drawn as their mean and min-max band
MAX_SITE_LINES = 4


def _series(records: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    pts = [(r["epoch"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
    return ([p[0] for p in pts], [p[1] for p in pts]) if pts else ([], [])


def _response_panel(ax, label: str, color, records: list[dict[str, Any]]) -> None:
    recs = [r for r in records if isinstance(r.get("diag_response_rms"), dict)]
    if not recs:
        return
    epochs = [r["epoch"] for r in recs]
    sites = list(recs[0]["diag_response_rms"])
    values = np.array([[r["diag_response_rms"].get(s, np.nan) for s in sites] for r in recs])
    if len(sites) <= MAX_SITE_LINES:
        styles = ["-", "--", ":", "-."]
        for j, site in enumerate(sites):
            name = f"{label}" if len(sites) == 1 else f"{label} {site}"
            ax.plot(epochs, values[:, j], styles[j], color=color, lw=1.2, label=name,
                    marker="o" if len(epochs) < 30 else None, ms=3)  # fmt: skip
    else:
        ax.plot(epochs, np.nanmean(values, 1), color=color, lw=1.2, ms=3,
                marker="o" if len(epochs) < 30 else None,
                label=f"{label} (mean of {len(sites)} sites)")  # fmt: skip
        ax.fill_between(epochs, np.nanmin(values, 1), np.nanmax(values, 1), color=color,
                        alpha=0.2, lw=0)  # fmt: skip


def plot_diagnostics(
    groups: Sequence[str | Path],
    out_png: str | Path,
    titles: Sequence[str] | None = None,
    dpi: int = 110,
) -> Path:
    """Draw one row per group of runs (folders holding ``metrics.jsonl`` with ``diag_*``
    keys, from ``train.diagnostics: true``); ``ValueError`` if a group logged none."""
    rows = []
    for group in groups:
        runs = _run_folders([group])
        records = [read_metrics(r) for r in runs]
        if not any("diag_response_rms" in rec for recs in records for rec in recs):
            raise ValueError(f"{group}: no diagnostics logged (run with train.diagnostics=true)")
        summaries = [_summary(r) for r in runs]
        rows.append((Path(group), runs, records, summaries, _auto_labels(runs, summaries)))
    fig = Figure(figsize=(18, 3.4 * len(rows)))
    axes = fig.subplots(len(rows), 4, squeeze=False)
    colors = [f"C{i}" for i in range(10)]
    for i, (group, _runs, records, summaries, labels) in enumerate(rows):
        ax_rms, ax_ratio, ax_cos, ax_hist = axes[i]
        s0 = next((s for s in summaries if s), {}) or {}
        head = titles[i] if titles else " / ".join(
            str(s0.get(k)) for k in ("model", "dataset") if s0.get(k)
        ) or group.name  # fmt: skip
        for j, (label, recs) in enumerate(zip(labels, records, strict=True)):
            color = colors[j % len(colors)]
            _response_panel(ax_rms, label, color, recs)
            for ax, key in ((ax_ratio, "diag_grad_ratio"), (ax_cos, "diag_grad_cos")):
                xs, ys = _series(recs, key)
                if xs:
                    ax.plot(xs, ys, color=color, marker="o" if len(xs) < 30 else None, ms=3,
                            lw=1.2, label=label)  # fmt: skip
        hists = [
            next((r["diag_pred_hist"] for r in reversed(recs) if "diag_pred_hist" in r), None)
            for recs in records
        ]
        present = [(lab, h) for lab, h in zip(labels, hists, strict=True) if h]
        if present:
            k = len(present[0][1])
            width = 0.8 / len(present)
            for j, (label, hist) in enumerate(present):
                share = 100.0 * np.asarray(hist, float) / max(sum(hist), 1)
                ax_hist.bar(np.arange(k) + (j - (len(present) - 1) / 2) * width, share, width,
                            color=colors[j % len(colors)], label=label)  # fmt: skip
            ax_hist.axhline(100.0 / k, color="k", lw=0.6, ls=":")
            ax_hist.set_xticks(range(k)) if k <= 20 else None
        if any(ax_ratio.get_lines()):
            ax_ratio.set_yscale("log")
        ax_cos.axhline(0.0, color="k", lw=0.6, ls=":")
        panels = (
            (ax_rms, "response RMS at the ARR sites", "epoch"),
            (ax_ratio, "‖∇ λ·L_arr‖ / ‖∇ L_task‖", "epoch"),
            (ax_cos, "cos(∇ L_task, ∇ λ·L_arr)", "epoch"),
            (ax_hist, "predicted class, % of the eval split (last epoch)", "class"),
        )
        for ax, title, xlabel in panels:
            ax.set_title(f"{head}: {title}" if ax is ax_rms else title, fontsize=9)
            ax.set_xlabel(xlabel, fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(lw=0.3, alpha=0.6)
            if xlabel == "epoch":
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    return out
