"""The ``dnrt`` command line (Typer): parses options, finds tasks, calls the engine."""

from __future__ import annotations

import functools
import inspect
import typing
from dataclasses import dataclass
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
        except KeyError as exc:  # str(KeyError) is the repr of the key
            _fail(f"missing key {exc.args[0]!r}" if exc.args else "missing key")
        except (ValueError, FileNotFoundError, TypeError) as exc:
            text = str(exc).strip() or type(exc).__name__
            _fail(text.splitlines()[0])

    return wrapper


# --------------------------------------------------------------------------- tasks


@app.command("tasks")
def tasks_cmd() -> None:
    """List registered task plugins (entry-point group ``dnrt.tasks``) and where they come from."""
    from rich.console import Console
    from rich.table import Table

    from dnrt_core.engine.plugins import PluginError, discover

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


@dataclass(frozen=True)
class ConfigOption:
    """A command-line option that stands for one config key (``--epochs`` -> ``train.epochs``).

    ``type`` bool makes a switch (``--x`` sets the key to true; absent leaves it alone).
    """

    name: str  # Python name; the flag is --name with "_" as "-"
    key: str  # dotted config key
    type: type
    help: str


#: every option that sets a config key, defined once for all commands that take them
CONFIG_OPTIONS = {
    opt.name: opt
    for opt in (
        ConfigOption("epochs", "train.epochs", int, "Training epochs."),
        ConfigOption("batch_size", "data.batch_size", int, "Batch size."),
        ConfigOption("lr", "train.lr", float, "Peak learning rate."),
        ConfigOption("seed", "seed", int, "Random seed."),
        ConfigOption("device", "device", str, "auto, cpu, cuda, cuda:N."),
        ConfigOption("arr_lambda", "mech.arr_lambda", float, "ARR weight lambda."),
        ConfigOption("arr_momentum", "mech.arr_momentum", float, "ARR memory momentum m."),
        ConfigOption("arr_sites", "mech.arr_sites", str, "ARR site glob, e.g. 'blocks.*'."),
        ConfigOption(
            "arr_placement", "mech.arr_placement", str,
            "Named ARR placement: last_stage, every_stage, every_block(_pre), every_layer, ...",
        ),  # fmt: skip
        ConfigOption("dataset", "data.dataset", str, "Dataset name (see the task's docs)."),
        ConfigOption("data_dir", "data.data_dir", str, "Folder holding the dataset."),
        ConfigOption("model", "model.name", str, "Model name."),
        ConfigOption(
            "deterministic", "deterministic", bool, "Deterministic kernels (exact resume)."
        ),
        ConfigOption(
            "skip_nonfinite", "train.skip_nonfinite", bool, "Skip batches with NaN/Inf loss."
        ),
        ConfigOption("weak_aug", "data.weak_aug", bool, "Flip + normalise only (image tasks)."),
        ConfigOption("imbalance", "data.imbalance", float, "Long-tail imbalance beta."),
        ConfigOption("backend", "data.backend", str, "Graph backend: pyg or dgl."),
        ConfigOption(
            "sampler", "data.sampler", str,
            "Graph: full | neighbor; long-tail: none | class-balanced | sqrt.",
        ),
        ConfigOption("fanout", "data.fanout", str, "Neighbour fan-out per layer, e.g. 10,5."),
        ConfigOption(
            "download", "data.download", bool, "Download the dataset if missing (needs internet)."
        ),
        ConfigOption("tensorboard", "train.tensorboard", bool, "Also write TensorBoard curves."),
    )
}  # fmt: skip
#: the options of ``dnrt train`` (all of them) and ``dnrt compare`` (it sweeps model and seed)
TRAIN_OPTIONS = tuple(CONFIG_OPTIONS)
COMPARE_OPTIONS = (
    "epochs", "batch_size", "lr", "device", "dataset", "data_dir", "weak_aug", "imbalance",
    "backend",
)  # fmt: skip

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
DataDirOpt = Annotated[str | None, typer.Option(help="Folder holding the dataset.")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML recipe.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config key: key=value (repeatable)."),
]


def with_config_options(names: tuple[str, ...]):
    """Decorator: add the :data:`CONFIG_OPTIONS` ``names`` to a command's Typer options and
    pass their values to it as one ``config_options`` dict {config key: value} (only the
    options given on the command line)."""

    def decorate(func):
        signature = inspect.signature(func)
        hints = typing.get_type_hints(func, include_extras=True)  # resolves the string forms
        params = [
            p.replace(annotation=hints.get(p.name, p.annotation))
            for p in signature.parameters.values()
            if p.name != "config_options"
        ]
        for name in names:
            opt = CONFIG_OPTIONS[name]
            if opt.type is bool:
                annotation = Annotated[bool, typer.Option(help=opt.help)]
                default: Any = False
            else:
                annotation = Annotated[opt.type | None, typer.Option(help=opt.help)]
                default = None
            params.append(
                inspect.Parameter(
                    name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
                )
            )

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            given = {}
            for name in names:
                value = kwargs.pop(name)
                if value is not None and value is not False:
                    given[CONFIG_OPTIONS[name].key] = value
            return func(*args, config_options=given, **kwargs)

        wrapper.__signature__ = signature.replace(parameters=params, return_annotation=None)
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        return wrapper

    return decorate


def _collect_overrides(
    config_options: dict[str, Any], act: str | None, arr: bool | None, sets: list[str] | None
) -> dict[str, Any]:
    """Config overrides from ``--set`` pairs, ``--act`` / ``--arr`` and the config options
    (later ones win)."""
    from dnrt_core.engine.config import parse_set_options
    from dnrt_core.mechanisms.names import act_overrides

    overrides = parse_set_options(sets or [])
    if act is not None:
        overrides.update(act_overrides(act))
    if arr is not None:
        overrides["mech.arr"] = arr
    overrides.update(config_options)
    return overrides


@app.command("train")
@user_errors
@with_config_options(TRAIN_OPTIONS)
def train_cmd(
    task: Annotated[str, typer.Argument(help="Task name (see `dnrt tasks`).")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    out: Annotated[
        Path | None, typer.Option(help="Output folder (default runs/<task>/...).")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out from last.pt.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace a run already in --out.")] = False,
    act: ActOpt = None,
    arr: ArrOpt = None,
    quiet: Annotated[bool, typer.Option(help="No progress output.")] = False,
    *,
    config_options: dict[str, Any],
) -> None:
    """Train TASK; writes config.yaml, metrics.jsonl, last.pt, best.pt, summary.json to --out."""
    from dnrt_core.engine import run

    overrides = _collect_overrides(config_options, act, arr, set_)
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


# --------------------------------------------------------------------------- export


@app.command("export")
@user_errors
def export_cmd(
    checkpoint: Annotated[Path, typer.Argument(help="A run's best.pt or last.pt.")],
    format: Annotated[str, typer.Option("--format", "-f", help="onnx or pt2 (torch.export).")] = (
        "onnx"
    ),
    out: Annotated[
        Path | None, typer.Option(help="Output file (default: the checkpoint with .onnx/.pt2).")
    ] = None,
    torchscript: Annotated[
        bool, typer.Option(help="ONNX through the TorchScript exporter, not the dynamo one.")
    ] = False,
    data_dir: Annotated[
        str | None, typer.Option(help="Folder holding the dataset (for the example batch).")
    ] = None,
) -> None:
    """Export a saved run's model for inference (eval mode, batch size dynamic) and check it
    against the eager model on a training batch."""
    from dnrt_core.tools.export import export_run

    path, diff = export_run(
        checkpoint, format.lower(), out, data_dir=data_dir, dynamo=not torchscript
    )
    check = "" if diff is None else f" (max |diff| vs eager on a training batch: {diff:.2e})"
    typer.echo(f"wrote {path}{check}")


# --------------------------------------------------------------------------- compare


def _split_list(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


@app.command("compare")
@user_errors
@with_config_options(COMPARE_OPTIONS)
def compare_cmd(
    task: Annotated[str, typer.Argument(help="Task name (see `dnrt tasks`).")],
    acts: Annotated[
        str | None,
        typer.Option(help="Mechanisms, comma-separated: e.g. relu,gelu,raa,gelu+arr,dnrt,dpa."),
    ] = None,
    models: Annotated[str | None, typer.Option(help="Models, comma-separated.")] = None,
    seeds: Annotated[int, typer.Option(help="Seeds per cell (0..N-1).")] = 1,
    out: Annotated[Path, typer.Option(help="Sweep folder (finished runs are reused).")] = Path(
        "runs/compare"
    ),
    from_: Annotated[
        Path | None, typer.Option("--from", help="Only rebuild the table from runs in DIR.")
    ] = None,
    metric: Annotated[str | None, typer.Option(help="Metric (default: the task's).")] = None,
    which: Annotated[str, typer.Option(help="final | best | best_val.")] = "final",
    rows: Annotated[str, typer.Option(help="Summary key of the table rows.")] = "model",
    cols: Annotated[
        str, typer.Option(help="Summary key of the columns (e.g. arr_lambda).")
    ] = "mechanism",
    export: Annotated[
        Path | None,
        typer.Option(help="Also copy each run's summary.json (no checkpoints) under DIR."),
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    *,
    config_options: dict[str, Any],
) -> None:
    """Run a mechanism × model × seed sweep and print the paper-style table (markdown + CSV)."""
    import functools as ft

    from dnrt_core.engine import run
    from dnrt_core.tools import compare

    if from_ is None:
        if not acts or not models:
            _fail("--acts and --models are needed (or --from DIR to rebuild a table)")
        base = _collect_overrides(config_options, None, None, set_)
        plan = compare.plan_sweep(task, _split_list(acts), _split_list(models), seeds, out, base)
        run_fn = ft.partial(run, task, config_file=config, quiet=True)
        summaries = compare.run_sweep(plan, run_fn)
        source = out
    else:
        summaries = compare.load_summaries(from_)
        if not summaries:
            _fail(f"no finished runs (summary.json) under {from_}")
        source = from_
    table = compare.build_table(summaries, metric=metric, which=which, rows=rows, cols=cols)
    if export is not None:
        for summary in summaries:
            run_dir = Path(summary.get(compare.PATH_KEY) or "")
            target = export / run_dir.name / "summary.json"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text((run_dir / "summary.json").read_text())
    markdown = table.to_markdown()
    source.mkdir(parents=True, exist_ok=True)
    (source / "table.md").write_text(markdown + "\n")
    (source / "table.csv").write_text(table.to_csv())
    typer.echo(markdown)
    typer.echo(f"\nwritten: {source / 'table.md'}, {source / 'table.csv'}", err=True)


# --------------------------------------------------------------------------- profile


@app.command("profile")
@user_errors
def profile_cmd(
    model: Annotated[str, typer.Argument(help="Model name, e.g. vit_tiny, resnet18.")],
    task: Annotated[str, typer.Option(help="Task whose model zoo builds MODEL.")] = "image",
    acts: Annotated[
        str, typer.Option("--act", "--acts", help="Mechanisms to compare with the baseline.")
    ] = "raa,dnrt,dpa",
    baseline_act: Annotated[
        str | None, typer.Option(help="Baseline activation (default: the model's own).")
    ] = None,
    img_size: Annotated[int, typer.Option(help="Input resolution.")] = 32,
    batch_size: Annotated[int, typer.Option(help="Batch size for latency.")] = 8,
    num_classes: Annotated[int, typer.Option(help="Classifier size.")] = 10,
    repeats: Annotated[int, typer.Option(help="Timed repeats (median); 0 = FLOPs only.")] = 10,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
) -> None:
    """Parameters, FLOPs and median latency: baseline vs RAA vs DNRT vs DPA (paper Table 4)."""
    import torch

    from dnrt_core.engine.plugins import load_task
    from dnrt_core.errors import unknown_name_error
    from dnrt_core.tools.profile import format_profile_table, profile_mechanisms

    zoo = load_task(task)
    if model not in zoo.model_names():
        raise unknown_name_error(f"{task} model", model, zoo.model_names())
    if batch_size <= 0 or img_size <= 0 or num_classes <= 0 or repeats < 0:
        _fail("--img-size, --batch-size and --num-classes must be positive, --repeats >= 0")
    dev = torch.device(device)
    mechanisms = ["baseline", *_split_list(acts)]

    def build():
        return zoo.create_model(model, num_classes, img_size=img_size).to(dev)

    example = torch.randn(batch_size, 3, img_size, img_size, device=dev)
    rows = profile_mechanisms(
        build, example, num_classes, mechanisms, baseline_act=baseline_act, repeats=repeats
    )
    header = f"{model} @ {img_size} px, batch {batch_size}, {device}"
    if dev.type == "cpu":  # timings depend on it: fused C kernels or tensor ops for RAA/ARR
        from dnrt_core import kernels

        header += f"; C kernels {kernels.status()}"
    typer.echo(header)
    typer.echo(format_profile_table(rows))


# --------------------------------------------------------------------------- plot


def _checkpoint_of(path: Path) -> Path:
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).is_file():
                return path / name
        _fail(f"{path} holds no best.pt or last.pt")
    return path


@plot_app.command("responses")
@user_errors
def plot_responses_cmd(
    runs: Annotated[
        list[Path], typer.Argument(help="Run folders or checkpoints (e.g. GELU, DNRT).")
    ],
    out: Annotated[Path, typer.Option(help="PNG to write.")] = Path("responses.png"),
    data_dir: DataDirOpt = None,
    samples: Annotated[int, typer.Option(help="Test samples to collect.")] = 512,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda.")] = "cpu",
) -> None:
    """Figure-2 style response distributions (class token per block, aggregated per class)."""
    from dnrt_core.engine import load_run
    from dnrt_core.tools.plots import collect_responses, figure2_sites, plot_response_distributions

    by_run = {}
    for path in runs:
        built, _ = load_run(_checkpoint_of(path), data_dir=data_dir, device=device)
        layers, aggregated, pool = figure2_sites(built.model)
        batches = (
            built.task.batch_inputs(b, built.device)
            for b in built.data.splits[built.task.report_split]
        )
        label = f"{path.name if path.is_dir() else path.parent.name}"
        by_run[label] = collect_responses(
            built.model, batches, [*layers, aggregated], pool=pool, max_samples=samples
        )
    written = plot_response_distributions(by_run, out, layers=layers, aggregated_site=aggregated)
    typer.echo(f"wrote {written}")


@plot_app.command("curves")
@user_errors
def plot_curves_cmd(
    runs: Annotated[list[Path], typer.Argument(help="Run folders (or sweep folders).")],
    out: Annotated[Path, typer.Option(help="PNG to write.")] = Path("curves.png"),
    metrics: Annotated[
        str | None, typer.Option(help="Comma-separated metrics (default: losses + primary).")
    ] = None,
) -> None:
    """Loss / accuracy over epochs of several runs on one figure."""
    from dnrt_core.tools.plots import plot_curves

    written = plot_curves(runs, out, metrics=_split_list(metrics) or None)
    typer.echo(f"wrote {written}")


@plot_app.command("diagnostics")
@user_errors
def plot_diagnostics_cmd(
    runs: Annotated[
        list[Path], typer.Argument(help="One folder per row (e.g. a ReLU-vs-DNRT sweep).")
    ],
    out: Annotated[Path, typer.Option(help="PNG to write.")] = Path("diagnostics.png"),
) -> None:
    """Response RMS at the ARR sites, ARR/task gradient ratio and cosine, predicted classes
    of runs trained with --set train.diagnostics=true."""
    from dnrt_core.tools.diagnostics_plot import plot_diagnostics

    written = plot_diagnostics(runs, out)
    typer.echo(f"wrote {written}")


def main() -> None:
    import warnings

    # PyG scripts a few helpers at import; the deprecation notice is not for our users
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)
    app()


if __name__ == "__main__":
    main()
