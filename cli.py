"""The ``dnrt`` command line (Typer): parses options, finds tasks, calls the engine."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    name="dnrt",
    help="Dynamic Neural Response Tuning (RAA + ARR) and Dual-Perspective Activation "
    "for any model and task.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
plot_app = typer.Typer(help="Figures from runs: response distributions, training curves.",
                       no_args_is_help=True)  # fmt: skip
app.add_typer(plot_app, name="plot")

EXIT_BAD_INPUT = 2


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def user_errors(func):
    """Turn expected failures into one line on stderr (exit 2), no traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from dnrt_core.engine import NonFiniteLossError

        try:
            return func(*args, **kwargs)
        except typer.Exit:
            raise
        except NonFiniteLossError as exc:
            _fail(str(exc), code=1)
        except KeyboardInterrupt:
            _fail(
                "interrupted; last.pt holds the last finished epoch (continue with --resume)", 130
            )
        except (ValueError, FileNotFoundError, KeyError, TypeError) as exc:
            text = str(exc).strip().strip("'\"") or type(exc).__name__
            _fail(text.splitlines()[0])

    return wrapper


# --------------------------------------------------------------------------- tasks


@app.command("tasks")
def tasks_cmd() -> None:
    """List registered task plugins (entry-point group ``dnrt.tasks``) and where they come from."""
    from rich.console import Console
    from rich.table import Table

    from dnrt_core.plugins import PluginError, discover

    table = Table("task", "description", "source", "entry point")
    broken = []
    for name, entry in discover().items():
        try:
            task = entry.load()
            table.add_row(name, task.description, entry.source, entry.target)
        except PluginError as exc:
            broken.append(str(exc))
            table.add_row(name, "[red]failed to import[/red]", entry.source, entry.target)
    Console().print(table)
    for line in broken:
        typer.echo(f"warning: {line}", err=True)


# --------------------------------------------------------------------------- train


TRAIN_OPTION_KEYS = {
    "epochs": "train.epochs",
    "batch_size": "data.batch_size",
    "lr": "train.lr",
    "seed": "seed",
    "device": "device",
    "arr_lambda": "mech.arr_lambda",
    "arr_momentum": "mech.arr_momentum",
    "arr_sites": "mech.arr_sites",
    "dataset": "data.dataset",
    "data_dir": "data.data_dir",
    "model": "model.name",
    "deterministic": "deterministic",
    "skip_nonfinite": "train.skip_nonfinite",
    "weak_aug": "data.weak_aug",
    "imbalance": "data.imbalance",
    "backend": "data.backend",
    "sampler": "data.sampler",
    "fanout": "data.fanout",
    "download": "data.download",
    "tensorboard": "train.tensorboard",
}

EpochsOpt = Annotated[int | None, typer.Option(help="Training epochs.")]
BatchOpt = Annotated[int | None, typer.Option(help="Batch size.")]
LrOpt = Annotated[float | None, typer.Option(help="Peak learning rate.")]
SeedOpt = Annotated[int | None, typer.Option(help="Random seed.")]
DeviceOpt = Annotated[str | None, typer.Option(help="auto, cpu, cuda, cuda:N.")]
ActOpt = Annotated[
    str | None,
    typer.Option(
        help="Mechanism: relu, gelu, silu, elu, selu, softplus, gdn, raa, raa_relu, "
        "raa_silu, tau, dpa, or dnrt (= raa + ARR)."
    ),  # fmt: skip
]
ArrOpt = Annotated[
    bool | None, typer.Option("--arr/--no-arr", help="Aggregated Response Regularization.")
]
DatasetOpt = Annotated[str | None, typer.Option(help="Dataset name (see the task's docs).")]
DataDirOpt = Annotated[str | None, typer.Option(help="Folder holding the dataset.")]
ModelOpt = Annotated[str | None, typer.Option(help="Model name.")]


def _collect_overrides(options: dict[str, Any], sets: list[str] | None) -> dict[str, Any]:
    from dnrt_core.config import parse_set_options
    from dnrt_core.tuning import resolve_mechanism

    overrides = parse_set_options(sets or [])
    act = options.pop("act", None)
    arr = options.pop("arr", None)
    if act is not None:
        name, implied_arr, implied_dpa = resolve_mechanism(act)
        overrides["mech.act"] = "dpa" if implied_dpa else name
        if implied_arr:
            overrides["mech.arr"] = True
    if arr is not None:
        overrides["mech.arr"] = arr
    for key, value in options.items():
        if value is not None and value is not False:
            overrides[TRAIN_OPTION_KEYS[key]] = value
    return overrides


@app.command("train")
@user_errors
def train_cmd(
    task: Annotated[str, typer.Argument(help="Task name (see `dnrt tasks`).")],
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML recipe.")] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a config key: key=value (repeatable)."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Output folder (default runs/<task>/...).")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out from last.pt.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace a run already in --out.")] = False,
    epochs: EpochsOpt = None,
    batch_size: BatchOpt = None,
    lr: LrOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    act: ActOpt = None,
    arr: ArrOpt = None,
    arr_lambda: Annotated[float | None, typer.Option(help="ARR weight lambda.")] = None,
    arr_momentum: Annotated[float | None, typer.Option(help="ARR memory momentum m.")] = None,
    arr_sites: Annotated[str | None, typer.Option(help="ARR site glob, e.g. 'blocks.*'.")] = None,
    dataset: DatasetOpt = None,
    data_dir: DataDirOpt = None,
    model: ModelOpt = None,
    deterministic: Annotated[
        bool, typer.Option(help="Deterministic kernels (exact resume).")
    ] = False,
    skip_nonfinite: Annotated[bool, typer.Option(help="Skip batches with NaN/Inf loss.")] = False,
    weak_aug: Annotated[bool, typer.Option(help="Flip + normalise only (image tasks).")] = False,
    imbalance: Annotated[float | None, typer.Option(help="Long-tail imbalance beta.")] = None,
    backend: Annotated[str | None, typer.Option(help="Graph backend: pyg or dgl.")] = None,
    sampler: Annotated[
        str | None, typer.Option(help="Graph: full or neighbor; long-tail: none or class-balanced.")
    ] = None,
    fanout: Annotated[
        str | None, typer.Option(help="Neighbour fan-out per layer, e.g. 10,5.")
    ] = None,
    download: Annotated[
        bool, typer.Option(help="Download the dataset if missing (needs internet).")
    ] = False,
    tensorboard: Annotated[bool, typer.Option(help="Also write TensorBoard curves.")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress output.")] = False,
) -> None:
    """Train TASK; writes config.yaml, metrics.jsonl, last.pt, best.pt, summary.json to --out."""
    from dnrt_core.engine import run

    options = {k: v for k, v in locals().items() if k in TRAIN_OPTION_KEYS or k in ("act", "arr")}
    overrides = _collect_overrides(options, set_)
    run(task, overrides, out, config_file=config, resume=resume, overwrite=overwrite, quiet=quiet)


# --------------------------------------------------------------------------- eval


@app.command("eval")
@user_errors
def eval_cmd(
    checkpoint: Annotated[Path, typer.Argument(help="A run's best.pt or last.pt.")],
    data_dir: DataDirOpt = None,
    split: Annotated[str | None, typer.Option(help="Split to score (default: test).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda.")] = "auto",
) -> None:
    """Score a saved run (top-1/top-5 or AUC/AP) with its ARR/DPA memories restored."""
    from dnrt_core.engine import evaluate_checkpoint

    task, metrics = evaluate_checkpoint(checkpoint, data_dir=data_dir, split=split, device=device)
    typer.echo(task.format_report(metrics))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
