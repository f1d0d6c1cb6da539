"""Mechanism sweeps and paper-style result tables (``dnrt compare``).

    >>> plan = plan_sweep("image", ["gelu", "dnrt"], ["vit_tiny"], seeds=3, out_dir="runs/cmp")
    >>> summaries = run_sweep(plan, functools.partial(engine.run, "image"))
    >>> print(build_table(summaries).to_markdown())

A protocol preset may list its trials (``trials:`` in the config file, read by
:func:`preset_trials`); ``plan_sweep(..., trials=...)`` then runs every model ×
mechanism once per trial instead of once per seed.

A run folder is finished when it holds ``summary.json``; ``run_sweep`` skips those,
resumes folders that hold ``last.pt`` and starts the others, so an interrupted
sweep continues where it stopped when run again.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import statistics
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..engine.metrics import lower_is_better
from ..mechanisms.names import check_mechanism, mechanism_sort_key, normalize

#: files a run writes; a folder without ``last.pt`` has nothing to resume, these are cleared
_RUN_FILES = ("config.yaml", "metrics.jsonl", "best.pt")
#: summary key that records where a loaded summary came from
PATH_KEY = "_run_dir"


# --------------------------------------------------------------------------- planning


@dataclass
class SweepRun:
    """One run of a sweep: ``overrides`` are dotted config keys for the engine."""

    mechanism: str
    model: str
    seed: int
    overrides: dict[str, Any]
    run_dir: Path
    trial: int | None = None

    @property
    def name(self) -> str:
        return self.run_dir.name


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", str(text)).strip("-") or "x"


def run_dir_name(model: str, mechanism: str, seed: int) -> str:
    """Stable folder name of one run: ``<model>__<mechanism>__s<seed>``."""
    return f"{_slug(model)}__{_slug(mechanism)}__s{seed}"


def preset_trials(config_file: str | Path) -> list[dict[str, Any]] | None:
    """The trials a config file lists, or None when it lists none.

    ``trials`` maps dotted config keys to equal-length lists; trial ``i`` sets every key
    to its ``i``-th value, e.g. GADBench's ``{data.split_seed: [3407, 3417, ...],
    seed: [3407, 3417, ...]}`` (one split and one model seed per trial).
    """
    from ..engine.config import ConfigError, load_yaml

    trials = load_yaml(config_file).get("trials")
    if trials is None:
        return None
    lists = isinstance(trials, dict) and all(isinstance(v, list) for v in trials.values())
    lengths = {len(v) for v in trials.values()} if lists else set()
    if len(lengths) != 1 or 0 in lengths:
        raise ConfigError(
            f"{config_file}: trials must map config keys to non-empty lists of one length"
        )
    (n,) = lengths
    return [{key: values[i] for key, values in trials.items()} for i in range(n)]


def plan_sweep(
    task: str,
    mechanisms: Sequence[str],
    models: Sequence[str],
    seeds: int | Sequence[int] | None,
    out_dir: str | Path,
    base_overrides: dict[str, Any] | None = None,
    trials: Sequence[dict[str, Any]] | None = None,
) -> list[SweepRun]:
    """The runs of a model × mechanism × seed (or trial) sweep (in that nesting order).

    ``seeds``: an int ``n`` means seeds ``0..n-1``; a list is used as given.
    ``trials`` (e.g. from :func:`preset_trials`): dotted overrides, one dict per trial,
    run in folders ``<model>__<mechanism>__t<i>``; ``seeds`` is then None (all trials) or
    an int ``n`` (the first ``n``).
    ``base_overrides`` (dotted keys, e.g. ``{"train.epochs": 10}``) go into every run;
    they may not set the swept keys. Unknown mechanism names raise ``ValueError``
    before anything runs. ``task`` is recorded for messages only: the caller binds it
    into ``run_fn``.
    """
    if not task:
        raise ValueError("plan_sweep needs a task name")
    if trials is not None:
        if seeds is not None and not isinstance(seeds, int):
            raise ValueError("with trials, seeds must be None or the number of trials to run")
        trial_list = [dict(t) for t in trials][: seeds if seeds is not None else None]
        seed_list = [int(t.get("seed", 0)) for t in trial_list]
    else:
        if seeds is None:
            raise ValueError("plan_sweep needs seeds (or trials)")
        seed_list = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
        trial_list = [{"seed": s} for s in seed_list]
    if not seed_list:
        raise ValueError("plan_sweep needs at least one seed")
    mechs = list(dict.fromkeys(normalize(m) for m in mechanisms))
    model_list = list(dict.fromkeys(str(m).strip() for m in models))
    if not mechs:
        raise ValueError("plan_sweep needs at least one mechanism")
    if not model_list or not all(model_list):
        raise ValueError("plan_sweep needs at least one (non-empty) model name")
    resolved = {m: check_mechanism(m) for m in mechs}
    base = dict(base_overrides or {})
    swept = {"model.name", "mech.act", "mech.arr", "mech.dpa", "seed"}
    clash = sorted(swept & set(base))
    if clash:
        raise ValueError(f"base overrides may not set the swept keys {clash}")
    clash = sorted((swept - {"seed"}) & {k for t in trial_list for k in t})
    if clash:
        raise ValueError(f"trials may not set the swept keys {clash}")
    out = Path(out_dir)
    plan: list[SweepRun] = []
    for model in model_list:
        for mech in mechs:
            act, arr, dpa = resolved[mech]
            for i, (seed, trial) in enumerate(zip(seed_list, trial_list, strict=True)):
                overrides = {
                    **base,
                    **trial,
                    "model.name": model,
                    "mech.act": act,
                    "mech.arr": arr,
                    "mech.dpa": dpa,
                    "seed": seed,
                }
                if trials is None:
                    run_dir = out / run_dir_name(model, mech, seed)
                    plan.append(SweepRun(mech, model, seed, overrides, run_dir))
                else:
                    run_dir = out / f"{_slug(model)}__{_slug(mech)}__t{i}"
                    plan.append(SweepRun(mech, model, seed, overrides, run_dir, trial=i))
    return plan


# --------------------------------------------------------------------------- running


def read_summary(path: Path) -> dict[str, Any]:
    """A run's ``summary.json`` with ``_run_dir`` (its folder) added."""
    summary = json.loads(path.read_text())
    if not isinstance(summary, dict):
        raise ValueError(f"{path} does not hold a JSON object")
    summary[PATH_KEY] = str(path.parent)
    return summary


def run_state(item: SweepRun) -> str:
    """``done`` (the folder holds ``summary.json``), ``resume`` (``last.pt``) or ``start``."""
    if (item.run_dir / "summary.json").exists():
        return "done"
    return "resume" if (item.run_dir / "last.pt").exists() else "start"


def clear_partial(item: SweepRun) -> None:
    """Remove what a run left before its first checkpoint, so that it can start afresh."""
    for name in _RUN_FILES:
        (item.run_dir / name).unlink(missing_ok=True)


def run_sweep(
    plan: Sequence[SweepRun],
    run_fn: Callable[..., dict[str, Any] | None],
    *,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Run a plan; returns the summaries in plan order.

    ``run_fn(overrides, out=run_dir, resume=bool) -> summary`` trains one run (e.g.
    ``functools.partial(engine.run, "image")``). Finished runs (``summary.json``) are
    loaded, not rerun; runs with ``last.pt`` are resumed; other folders start afresh
    (their partial files without a checkpoint are removed first). Errors propagate,
    and running the same plan again continues from there.
    """
    summaries: list[dict[str, Any]] = []
    total = len(plan)
    for i, item in enumerate(plan, 1):
        summary_path = item.run_dir / "summary.json"
        state = run_state(item)
        if progress:
            verb = {"done": "finished, skipped", "resume": "resuming", "start": "running"}[state]
            print(f"[{i}/{total}] {item.name}: {verb}", file=sys.stderr, flush=True)
        if state != "done":
            if state == "start":
                clear_partial(item)
            result = run_fn(dict(item.overrides), out=str(item.run_dir), resume=state == "resume")
            if summary_path.exists():
                result = read_summary(summary_path)
            elif not isinstance(result, dict):
                raise RuntimeError(f"{item.run_dir}: run_fn returned no summary")
            else:
                result = {**result, PATH_KEY: str(item.run_dir)}
        else:
            result = read_summary(summary_path)
        summaries.append(result)
    return summaries


def load_summaries(directory: str | Path) -> list[dict[str, Any]]:
    """Every ``summary.json`` below ``directory`` (sorted by path); each dict gets ``_run_dir``."""
    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"no such folder: {root}")
    found = sorted(root.rglob("summary.json"))
    # hidden folders hold no finished run (a run replaced by --overwrite waits in .replaced-*)
    found = [
        p for p in found if not any(part.startswith(".") for part in p.relative_to(root).parts)
    ]
    return [read_summary(p) for p in found]


# --------------------------------------------------------------------------- tables


@dataclass
class Cell:
    """Mean ± sample std (0 for one value) of one row × column over seeds."""

    values: list[float]
    seeds: list[Any] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float:
        return statistics.stdev(self.values) if self.n > 1 else 0.0


@dataclass
class ResultTable:
    """Aggregated results: ``cells[(row, col)]`` -> :class:`Cell`."""

    metric: str
    which: str
    rows: list[str]
    cols: list[str]
    cells: dict[tuple[str, str], Cell]
    row_key: str = "model"
    col_key: str = "mechanism"
    task: str | None = None
    dataset: str | None = None

    def best_col(self, row: str) -> str | None:
        """Column with the best mean in ``row`` (lowest for losses)."""
        present = [c for c in self.cols if (row, c) in self.cells]
        if not present:
            return None
        sign = -1.0 if lower_is_better(self.metric) else 1.0
        return max(present, key=lambda c: sign * self.cells[(row, c)].mean)

    def _digits(self) -> int:
        values = [abs(v) for cell in self.cells.values() for v in cell.values]
        return 4 if values and max(values) <= 1.0 else 2

    def format_cell(self, row: str, col: str, digits: int | None = None) -> str:
        cell = self.cells.get((row, col))
        if cell is None:
            return "–"
        d = self._digits() if digits is None else digits
        return f"{cell.mean:.{d}f} ± {cell.std:.{d}f}"

    def to_markdown(self, digits: int | None = None, bold_best: bool = True) -> str:
        """Rows = models, columns = mechanisms, ``mean ± std`` cells, the best per row in bold.
        Cells with fewer runs than the others show their ``n``."""
        ns = sorted({cell.n for cell in self.cells.values()})
        n_text = f"n={ns[0]}" if len(ns) == 1 else f"n={ns[0]}–{ns[-1]}"
        title = f"{self.metric} ({self.which}, mean ± std over seeds, {n_text})"
        context = " / ".join(str(x) for x in (self.task, self.dataset) if x)
        header = [f"{self.row_key} \\ {self.col_key}", *self.cols]
        lines = [
            f"**{context}**: {title}" if context else title,
            "",
            "| " + " | ".join(header) + " |",
            "|" + "|".join([":---"] + ["---:"] * len(self.cols)) + "|",
        ]
        for row in self.rows:
            best = self.best_col(row) if bold_best else None
            cells = []
            for col in self.cols:
                text = self.format_cell(row, col, digits)
                if col == best:
                    text = f"**{text}**"
                cell = self.cells.get((row, col))
                if cell is not None and cell.n < ns[-1]:
                    text += f" (n={cell.n})"
                cells.append(text)
            lines.append("| " + " | ".join([row, *cells]) + " |")
        return "\n".join(lines) + "\n"

    def to_csv(self) -> str:
        """One line per cell: ``row,col,mean,std,n``."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["row", "col", "mean", "std", "n"])
        for row in self.rows:
            for col in self.cols:
                cell = self.cells.get((row, col))
                if cell is not None:
                    writer.writerow([row, col, repr(cell.mean), repr(cell.std), cell.n])
        return buf.getvalue()


def _metric_value(summary: dict[str, Any], metric: str, which: str) -> float:
    where = summary.get(PATH_KEY, summary.get("model", "?"))
    if which == "final":
        source = summary.get("final") or {}
    elif which in ("best", "best_val"):
        source = (summary.get("best") or {}).get("test" if which == "best" else "val") or {}
    else:
        raise ValueError(f"unknown which {which!r}; valid: final, best, best_val")
    if metric not in source:
        raise ValueError(
            f"{where}: no {which} metric {metric!r}; it has {sorted(source) or 'none'}"
        )
    value = float(source[metric])
    if not math.isfinite(value):
        raise ValueError(f"{where}: {which} {metric} is {value}")
    return value


def _unique(summaries: Iterable[dict[str, Any]], key: str) -> list[Any]:
    return list(dict.fromkeys(s.get(key) for s in summaries))


def build_table(
    summaries: Sequence[dict[str, Any]],
    metric: str | None = None,
    which: str = "final",
    rows: str = "model",
    cols: str = "mechanism",
    col_order: Sequence[str] | None = None,
    row_order: Sequence[str] | None = None,
) -> ResultTable:
    """Aggregate finished runs into a ``rows × cols`` table of ``metric``, mean ± std over seeds.

    ``metric`` defaults to the runs' ``primary_metric``; ``which`` is ``final`` (test metrics
    of the last epoch), ``best`` (test metrics at the best validation epoch) or ``best_val``.
    Summaries of different tasks or datasets (unless one is the row/column key) or with
    different primary metrics (when ``metric`` is not given) raise ``ValueError``.
    """
    summaries = list(summaries)
    if not summaries:
        raise ValueError("no finished runs (summary.json) to tabulate")
    for key in ("task", "dataset"):
        if key in (rows, cols):
            continue
        values = _unique(summaries, key)
        if len(values) > 1:
            raise ValueError(
                f"runs of different {key}s {values} cannot share one table; "
                f"tabulate them separately or use {key!r} as rows/cols"
            )
    if metric is None:
        metrics = _unique(summaries, "primary_metric")
        if len(metrics) > 1:
            raise ValueError(f"runs have different primary metrics {metrics}; pass metric=")
        metric = metrics[0]
        if not metric:
            raise ValueError("summaries name no primary_metric; pass metric=")
    grouped: dict[tuple[str, str], Cell] = {}
    for s in summaries:
        for key in (rows, cols):
            if s.get(key) is None:
                raise ValueError(f"{s.get(PATH_KEY, '?')}: summary has no {key!r}")
        cell = grouped.setdefault((str(s[rows]), str(s[cols])), Cell([]))
        cell.values.append(_metric_value(s, metric, which))
        cell.seeds.append(s.get("seed"))
    row_names = list(dict.fromkeys(r for r, _ in grouped))
    col_names = list(dict.fromkeys(c for _, c in grouped))
    row_names = _ordered(row_names, row_order, "row")
    if col_order is None and cols == "mechanism":
        col_names = sorted(col_names, key=mechanism_sort_key)
    else:
        col_names = _ordered(col_names, col_order, "column")
    tasks = _unique(summaries, "task")
    datasets = _unique(summaries, "dataset")
    return ResultTable(
        metric=str(metric),
        which=which,
        rows=row_names,
        cols=col_names,
        cells=grouped,
        row_key=rows,
        col_key=cols,
        task=str(tasks[0]) if len(tasks) == 1 and tasks[0] else None,
        dataset=str(datasets[0]) if len(datasets) == 1 and datasets[0] else None,
    )


def _ordered(names: list[str], order: Sequence[str] | None, kind: str) -> list[str]:
    """``names`` in ``order`` (which must list each at most once), the unlisted ones after."""
    if order is None:
        return names
    order = [str(o) for o in order]
    missing = [o for o in order if o not in names]
    if missing:
        raise ValueError(f"{kind} order names {missing}, which no run has; have {names}")
    return order + [n for n in names if n not in order]
