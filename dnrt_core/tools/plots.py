"""Figures: response distributions (the paper's Figure 2) and training curves.

Figures are drawn on :class:`matplotlib.figure.Figure` objects with the Agg
canvas, without pyplot, so nothing changes the global matplotlib backend.

    >>> sites, agg_site, pool = figure2_sites(vit)
    >>> base = collect_responses(vit_gelu, loader, [*sites, agg_site], pool=pool)
    >>> dnrt = collect_responses(vit_dnrt, loader, [*sites, agg_site], pool=pool)
    >>> plot_response_distributions({"GELU": base, "DNRT": dnrt}, "fig2.png")
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator
from torch import nn

from ..errors import closest_name
from ..mechanisms.pooling import aggregate, class_indices
from ..tuning import Tuned, default_arr_sites, detect_family, is_activation
from ..tuning.sites import vit_pool

Responses = dict[str, tuple[np.ndarray, np.ndarray]]

# --------------------------------------------------------------------------- responses


def _inner(model: nn.Module) -> nn.Module:
    return model.model if isinstance(model, Tuned) else model


def _spread(items: Sequence[Any], k: int) -> list[Any]:
    """Up to ``k`` items evenly spread over ``items`` (first and last included)."""
    if len(items) <= k:
        return list(items)
    idx = np.linspace(0, len(items) - 1, k).round().astype(int)
    return [items[i] for i in dict.fromkeys(idx.tolist())]


def figure2_sites(model: nn.Module) -> tuple[list[str], str, str]:
    """The paper's Figure 2 sites: (activation sites for panel a, aggregated site for b, pool).

    ViT with ``blocks``: the MLP activations of layers 1, 4 and 10 (1-based; evenly spread
    layers in shallower models) and the class token of the last block's output.
    Other models: three activation modules spread over the network and the default ARR
    site, with ``pool="auto"`` (global average for feature maps, nodes for graphs).
    """
    inner = _inner(model)
    family = detect_family(inner)
    blocks = getattr(inner, "blocks", None)
    if family == "vit" and isinstance(blocks, (nn.ModuleList, nn.Sequential)):
        depth = len(blocks)
        layers = [i for i in (0, 3, 9) if i < depth]
        if len(layers) < 3:
            layers = _spread(list(range(depth)), 3)
        acts = [
            f"blocks.{i}.mlp.act"
            for i in layers
            if isinstance(getattr(getattr(blocks[i], "mlp", None), "act", None), nn.Module)
        ]
        if not acts:
            acts = [f"blocks.{i}" for i in layers]
        return acts, f"blocks.{depth - 1}", vit_pool(inner)
    names = [n for n, m in inner.named_modules() if n and is_activation(m)]
    if not names:
        raise ValueError("model has no activation modules; give the sites explicitly")
    try:
        agg = default_arr_sites(inner, family)[0][0]
    except ValueError:
        agg = names[-1]
    return _spread(names, 3), agg, "auto"


def _resolve_site(inner: nn.Module, site: str) -> nn.Module:
    try:
        return inner.get_submodule(site)
    except AttributeError:
        names = [n for n, _ in inner.named_modules() if n]
        hint = closest_name(site, names)
        msg = f"no module named {site!r} in the model"
        raise ValueError(msg + (f" (did you mean {hint!r}?)" if hint else "")) from None


def _to_device(x: Any, device: torch.device) -> Any:
    if isinstance(x, torch.Tensor):
        return x.to(device)
    if isinstance(x, (tuple, list)):
        return type(x)(_to_device(v, device) for v in x)
    return x


@torch.no_grad()
def collect_responses(
    model: nn.Module,
    batches: Iterable[tuple[Any, torch.Tensor]],
    sites: Sequence[str],
    pool: str | Mapping[str, str] = "token",
    max_samples: int | None = None,
    device: torch.device | str | None = None,
) -> Responses:
    """Aggregated responses of ``model`` at ``sites`` over ``batches`` of ``(x, y)``.

    ``sites`` are module names of the network (inside a :class:`Tuned` wrapper, e.g.
    ``blocks.0.mlp.act`` or ``blocks.11``); each site's output is reduced to one vector
    per sample by :func:`dnrt_core.pooling.aggregate` with ``pool`` (one name, or a
    per-site mapping): ``token`` = class token (ViT), ``avg`` = global average pool (CNN),
    ``node``, ``mean`` or ``auto``. ``x`` may be a tuple of model inputs. A module called
    several times per forward contributes its first call. Runs in eval mode without
    targets (memories are not touched). Returns ``{site: (responses (N, d), labels (N,))}``.
    """
    if not sites:
        raise ValueError("collect_responses needs at least one site")
    inner = _inner(model)
    modules = {site: _resolve_site(inner, site) for site in sites}
    if device is None:
        ref = next(iter(model.parameters()), None)
        device = ref.device if ref is not None else torch.device("cpu")
    device = torch.device(device)
    pools = {s: pool[s] if isinstance(pool, Mapping) else pool for s in sites}
    store: dict[str, list[torch.Tensor]] = {s: [] for s in sites}
    seen: set[str] = set()
    handles = []
    for site, module in modules.items():

        def hook(_m, _inp, output, site=site):
            if site in seen:
                return
            seen.add(site)
            store[site].append(aggregate(output, pools[site]).detach().float().cpu())

        handles.append(module.register_forward_hook(hook))
    labels: list[torch.Tensor] = []
    was_training = model.training
    model.eval()
    count = 0
    try:
        for x, y in batches:
            seen.clear()
            inputs = x if isinstance(x, tuple) else (x,)
            model(*_to_device(inputs, device))
            y = class_indices(torch.as_tensor(y)).cpu()
            for site in sites:
                if site not in seen:
                    raise ValueError(f"site {site!r} was not called in the forward pass")
                if store[site][-1].shape[0] != y.shape[0]:
                    raise ValueError(
                        f"site {site!r} gave {store[site][-1].shape[0]} responses for "
                        f"{y.shape[0]} labels; choose another pool or site"
                    )
            labels.append(y)
            count += y.shape[0]
            if max_samples is not None and count >= max_samples:
                break
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if not labels:
        raise ValueError("collect_responses got no batches")
    ys = torch.cat(labels)[:max_samples].numpy()
    return {s: (torch.cat(store[s])[:max_samples].numpy(), ys) for s in sites}


# --------------------------------------------------------------------------- figure 2


def _violins(
    ax, data: list[np.ndarray], positions: np.ndarray, color: str, side: str, width: float
) -> None:
    """Violins of ``data`` at ``positions``; ``side`` is ``both``/``low``/``high``."""
    safe = []
    for values in data:
        values = np.asarray(values, dtype=np.float64)
        if values.std() == 0:  # a constant channel (e.g. all zeros): KDE needs a spread
            values = values + np.linspace(-1e-4, 1e-4, len(values)) * (abs(values[0]) + 1)
        safe.append(values)
    try:
        parts = ax.violinplot(
            safe, positions=positions, widths=width, showextrema=False, points=60, side=side
        )
    except TypeError:  # matplotlib < 3.9 has no half violins
        parts = ax.violinplot(safe, positions=positions, widths=width, showextrema=False, points=60)
    for body in parts["bodies"]:
        body.set_facecolor(color)
        body.set_edgecolor(color)
        body.set_alpha(0.55)
        body.set_linewidth(0.4)


def _subsample(values: np.ndarray, limit: int, seed: int = 0) -> np.ndarray:
    if values.shape[0] <= limit:
        return values
    idx = np.random.default_rng(seed).choice(values.shape[0], limit, replace=False)
    return values[np.sort(idx)]


def _panel(
    ax,
    per_run: list[tuple[str, np.ndarray]],
    channels: int,
    colors: list[str],
    title: str,
    max_points: int,
) -> None:
    """Per-channel distributions of each run's responses (N, d) on one axis."""
    n_runs = len(per_run)
    c = min(channels, min(r.shape[1] for _, r in per_run))
    pos = np.arange(c)
    split = n_runs == 2
    width = 0.9 if split else 0.8 / max(n_runs, 1)
    values_all = []
    for i, (_label, resp) in enumerate(per_run):
        resp = _subsample(resp[:, :c], max_points)
        values_all.append(resp.ravel())
        if split:
            offset, side = 0.0, ("low", "high")[i]
        else:
            offset, side = (i - (n_runs - 1) / 2) * width, "both"
        _violins(ax, [resp[:, j] for j in range(c)], pos + offset, colors[i], side, width)
        ax.plot(pos + offset, resp.mean(axis=0), color=colors[i], lw=0.8, marker=".", ms=2)
    flat = np.concatenate(values_all)
    lo, hi = np.percentile(flat, [0.5, 99.5])
    pad = 0.08 * (hi - lo if hi > lo else 1.0)
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlim(-1, c)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel("response", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.axhline(0.0, color="0.6", lw=0.5, zorder=0)
    ax.grid(axis="y", lw=0.3, alpha=0.5)


def plot_response_distributions(
    responses_by_run: Mapping[str, Responses],
    out_png: str | Path,
    channels: int = 50,
    classes: Sequence[int] | None = None,
    class_names: Sequence[str] | Mapping[int, str] | None = None,
    layers: Sequence[str] | None = None,
    aggregated_site: str | None = None,
    max_points: int = 2000,
    title: str | None = None,
    dpi: int = 110,
) -> Path:
    """Figure 2 of the paper as a PNG; returns its path.

    ``responses_by_run``: ``{run label: collect_responses(...)}``, e.g. ``{"GELU": ..,
    "DNRT": ..}`` (the first run is drawn blue on the left half of each violin, the second
    red on the right half). Left column (a): per site in ``layers`` (default: every site
    but the aggregated one), the distribution of each of the first ``channels`` channels
    over all samples. Right column (b): the aggregated responses at ``aggregated_site``
    (default: the last site) per class, for ``classes`` (default: the first three present).
    Lines connect the per-channel means.
    """
    if not responses_by_run:
        raise ValueError("no runs to plot")
    runs = list(responses_by_run)
    site_order = list(dict.fromkeys(s for r in runs for s in responses_by_run[r]))
    if not site_order:
        raise ValueError("the runs hold no responses")
    agg = aggregated_site or site_order[-1]
    if agg not in site_order:
        raise ValueError(f"aggregated site {agg!r} not collected; have {site_order}")
    layer_sites = list(layers) if layers is not None else [s for s in site_order if s != agg]
    if not layer_sites:
        layer_sites = [agg]
    for s in layer_sites:
        if s not in site_order:
            raise ValueError(f"site {s!r} not collected; have {site_order}")
    agg_runs = [r for r in runs if agg in responses_by_run[r]]
    if classes is None:
        present = np.unique(np.concatenate([responses_by_run[r][agg][1] for r in agg_runs]))
        classes = [int(c) for c in present[present >= 0][:3]]
    classes = list(classes)
    colors = ["tab:blue", "tab:red", "tab:green", "tab:orange", "tab:purple", "tab:brown"]
    colors = (colors * (len(runs) // len(colors) + 1))[: len(runs)]
    color_of = dict(zip(runs, colors, strict=True))

    def class_label(k: int) -> str:
        if class_names is None:
            return f"class {k}"
        if isinstance(class_names, Mapping):
            return str(class_names.get(k, k))
        return str(class_names[k]) if 0 <= k < len(class_names) else f"class {k}"

    n_rows = max(len(layer_sites), len(classes), 1)
    fig = Figure(figsize=(19, 2.7 * n_rows + 0.9))
    axes = fig.subplots(n_rows, 2, squeeze=False)
    for i, site in enumerate(layer_sites):
        per_run = [(r, responses_by_run[r][site][0]) for r in runs if site in responses_by_run[r]]
        _panel(
            axes[i][0],
            per_run,
            channels,
            [color_of[r] for r, _ in per_run],
            f"(a) activation responses at {site}",
            max_points,
        )
    for i, k in enumerate(classes):
        per_run = []
        for r in agg_runs:
            resp, labels = responses_by_run[r][agg]
            if np.any(labels == k):
                per_run.append((r, resp[labels == k]))
        ax = axes[i][1]
        if not per_run:
            ax.set_title(f"(b) {class_label(k)}: no samples", fontsize=10)
            continue
        _panel(
            ax,
            per_run,
            channels,
            [color_of[r] for r, _ in per_run],
            f"(b) aggregated responses at {agg}, {class_label(k)} (n={len(per_run[0][1])})",
            max_points,
        )
    for col, count in ((0, len(layer_sites)), (1, len(classes))):
        for i in range(count, n_rows):
            axes[i][col].set_visible(False)
        if count:
            axes[count - 1][col].set_xlabel("channel index", fontsize=8)
    handles = [Patch(facecolor=color_of[r], alpha=0.55, label=r) for r in runs]
    fig.legend(handles=handles, loc="upper right", ncol=len(runs), fontsize=9)
    fig.suptitle(title or f"Response distributions of the first {channels} channels", fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    return out


# --------------------------------------------------------------------------- curves


def _run_folders(paths: Sequence[str | Path]) -> list[Path]:
    """Each path that holds ``metrics.jsonl``, or the run folders found below it."""
    found: list[Path] = []
    for p in map(Path, paths):
        if (p / "metrics.jsonl").is_file():
            found.append(p)
        elif p.is_dir():
            found += sorted(
                m.parent
                for m in p.rglob("metrics.jsonl")  # not in hidden folders (.replaced-* runs)
                if not any(part.startswith(".") for part in m.relative_to(p).parts)
            )
        else:
            raise FileNotFoundError(f"no such run folder: {p}")
    found = list(dict.fromkeys(found))
    if not found:
        raise FileNotFoundError(f"no metrics.jsonl under {', '.join(map(str, paths))}")
    return found


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The epoch records of a run's ``metrics.jsonl`` (blank/truncated last lines skipped)."""
    records = []
    for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut off by an interrupted write
    return records


def _summary(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / "summary.json"
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except json.JSONDecodeError:
        return None


def _auto_labels(runs: list[Path], summaries: list[dict[str, Any] | None]) -> list[str]:
    if len(runs) == 1 and summaries[0]:
        return [str(summaries[0].get("mechanism", runs[0].name))]
    if not all(summaries):
        return [r.name for r in runs]
    keys = [
        k
        for k in ("dataset", "model", "mechanism", "seed")
        if len({str(s.get(k)) for s in summaries}) > 1
    ]
    if not keys:
        return [r.name for r in runs]
    labels = [
        " ".join(f"s{s.get(k)}" if k == "seed" else str(s.get(k)) for k in keys) for s in summaries
    ]
    return labels if len(set(labels)) == len(labels) else [r.name for r in runs]


def plot_curves(
    run_dirs: Sequence[str | Path],
    out_png: str | Path,
    metrics: Sequence[str] | None = ("train_loss", "val_loss", "val_top1"),
    labels: Sequence[str] | None = None,
    dpi: int = 110,
) -> Path:
    """Training curves from ``metrics.jsonl``: one subplot per metric, one line per run.

    ``run_dirs`` are run folders or folders holding runs (e.g. a sweep). ``metrics=None``
    picks ``train_loss``, ``val_loss`` and ``val_<primary metric>``. A metric that no run
    logged raises ``ValueError``. Lines are labelled with what differs between the runs'
    summaries (model, mechanism, seed), else the folder names.
    """
    runs = _run_folders(run_dirs)
    records = [read_metrics(r) for r in runs]
    summaries = [_summary(r) for r in runs]
    if metrics is None:
        primary = next(
            (s["primary_metric"] for s in summaries if s and "primary_metric" in s), "top1"
        )
        metrics = [
            m
            for m in ("train_loss", "val_loss", f"val_{primary}")
            if any(m in rec for recs in records for rec in recs)
        ]
    metrics = list(metrics)
    logged = sorted({k for recs in records for rec in recs for k in rec} - {"epoch"})
    missing = [m for m in metrics if m not in logged]
    if missing or not metrics:
        raise ValueError(f"no run logged {missing or 'any metric'}; logged: {logged}")
    if labels is None:
        labels = _auto_labels(runs, summaries)
    elif len(labels) != len(runs):
        raise ValueError(f"{len(labels)} labels for {len(runs)} runs")
    fig = Figure(figsize=(4.6 * len(metrics), 3.6))
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics, strict=True):
        for label, recs in zip(labels, records, strict=True):
            pts = [(r["epoch"], r[metric]) for r in recs if r.get(metric) is not None]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, marker="o" if len(pts) < 30 else None, ms=3, lw=1.2, label=label)
        ax.set_title(metric, fontsize=10)
        ax.set_xlabel("epoch", fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(lw=0.3, alpha=0.6)
        ax.tick_params(labelsize=8)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    return out
