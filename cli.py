"""The ``dnrt`` command line (Typer): parses options, finds tasks, calls the engine."""

from __future__ import annotations

import functools
import inspect
import os
import signal
import sys
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

if TYPE_CHECKING:
    from collections.abc import Callable

    import click

    from dnrt_core.engine import ConfigOption, Task

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
#: ``--debug`` (or ``DNRT_DEBUG=1``): let errors through with their traceback
_DEBUG = {"on": bool(os.environ.get("DNRT_DEBUG"))}


@app.callback()
def _options(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show the full traceback of an error.")
    ] = False,
) -> None:
    _DEBUG["on"] = debug or bool(os.environ.get("DNRT_DEBUG"))


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def user_errors(func):
    """The error boundary of every command: any failure ends in one line on stderr, exit 2
    for bad input, 1 for an environment failure, 130 for Ctrl-C
    (:func:`dnrt_core.errors.describe`); ``--debug`` shows the traceback instead."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except BaseException as exc:
            if _DEBUG["on"]:
                raise
            from dnrt_core.errors import describe

            code, message = describe(exc)
            _fail(message, code)

    return wrapper


# --------------------------------------------------------------------------- tasks


@app.command("tasks")
@user_errors
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


@functools.cache
def shared_options() -> tuple[ConfigOption, ...]:
    """Options every task takes; a task adds its own (``Task.options``: backend, imbalance...)."""
    from dnrt_core.engine.config import ConfigOption as Opt

    return (
        Opt("epochs", "train.epochs", int, "Training epochs."),
        Opt("batch_size", "data.batch_size", int, "Batch size."),
        Opt("lr", "train.lr", float, "Peak learning rate."),
        Opt("seed", "seed", int, "Random seed."),
        Opt("device", "device", str, "auto, cpu, cuda, cuda:N."),
        Opt("arr_lambda", "mech.arr_lambda", float, "ARR weight lambda."),
        Opt("arr_momentum", "mech.arr_momentum", float, "ARR memory momentum m."),
        Opt("arr_sites", "mech.arr_sites", str, "ARR site glob, e.g. 'blocks.*'."),
        Opt(
            "arr_placement",
            "mech.arr_placement",
            str,
            "Named ARR placement: last_stage, every_stage, every_block(_pre), every_layer, ...",
        ),  # fmt: skip
        Opt("dataset", "data.dataset", str, "Dataset name (see the task's docs)."),
        Opt("data_dir", "data.data_dir", str, "Folder holding the dataset."),
        Opt("model", "model.name", str, "Model name."),
        Opt("deterministic", "deterministic", bool, "Deterministic kernels (exact resume)."),
        Opt("skip_nonfinite", "train.skip_nonfinite", bool, "Skip batches with NaN/Inf loss."),
        Opt("tensorboard", "train.tensorboard", bool, "Also write TensorBoard curves."),
    )


#: shared options that ``dnrt compare`` takes; it sweeps model and seed itself
COMPARE_SHARED = ("epochs", "batch_size", "lr", "device", "dataset", "data_dir")
COMPARE_SWEPT = ("model", "seed")

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


def task_options(
    task: Task, shared: tuple[str, ...] | None = None, skip: tuple[str, ...] = ()
) -> list[ConfigOption]:
    """The shared options (all, or those named in ``shared``), each replaced by the task's
    option of the same name, then the task's others; names in ``skip`` left out."""
    own = {opt.name: opt for opt in task.options}
    common = [o for o in shared_options() if shared is None or o.name in shared]
    merged = [own.pop(opt.name, opt) for opt in common]
    return [opt for opt in [*merged, *own.values()] if opt.name not in skip]


def with_config_options(options: list[ConfigOption]):
    """Decorator: add ``options`` to a command's Typer options and pass their values to it as
    one ``config_options`` dict {config key: value} (only the options given on the command
    line)."""

    def decorate(func):
        signature = inspect.signature(func)
        hints = typing.get_type_hints(func, include_extras=True)  # resolves the string forms
        params = [
            p.replace(annotation=hints.get(p.name, p.annotation))
            for p in signature.parameters.values()
            if p.name != "config_options"
        ]
        for opt in options:
            if opt.type is bool:
                annotation = Annotated[bool, typer.Option(opt.flag, help=opt.help)]
                default: Any = False
            else:
                annotation = Annotated[opt.type | None, typer.Option(opt.flag, help=opt.help)]
                default = None
            params.append(
                inspect.Parameter(
                    opt.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
                )
            )

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            given = {}
            for opt in options:
                value = kwargs.pop(opt.name)
                if value is not None and value is not False:
                    given[opt.key] = value
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


def _tasks_with_flag(flag: str) -> list[str]:
    """Registered tasks (that import) declaring the option ``flag`` (e.g. ``--weak-aug``)."""
    from dnrt_core.engine.plugins import PluginError, discover

    owners = []
    for name, entry in discover().items():
        try:
            task = entry.load()
        except PluginError:
            continue
        if any(opt.flag == flag for opt in task.options):
            owners.append(name)
    return owners


class TaskCommand(TyperCommand):
    """One task's command; an option that only other tasks declare is a one-line error
    naming them (instead of click's generic "No such option")."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        known = {flag for p in self.params for flag in (*p.opts, *p.secondary_opts)}
        for arg in args:
            if arg == "--":
                break
            flag = arg.split("=", 1)[0]
            if flag.startswith("--") and flag not in known:
                owners = [t for t in _tasks_with_flag(flag) if t != self.name]
                if owners:
                    tasks = " and ".join(repr(t) for t in owners)
                    command = " ".join(["dnrt", *ctx.command_path.split()[1:]])
                    _fail(f"{flag} is an option of task {tasks}, not of {self.name!r} "
                          f"(`{command} --help` lists its options)")  # fmt: skip
        return super().parse_args(ctx, args)


class TaskCommands(TyperGroup):
    """A subcommand per registered task (``dnrt.tasks`` entry points), built on use from the
    shared options and the task's own by :attr:`make_command` (set by :func:`_add_task_group`)."""

    make_command: Callable[[str, Task], click.Command]

    def list_commands(self, ctx) -> list[str]:
        from dnrt_core.engine.plugins import discover

        return list(discover())

    def get_command(self, ctx, name: str):
        from dnrt_core.engine.plugins import PluginError, discover, load_task

        try:
            task = load_task(name)
        except PluginError as exc:
            if name not in discover():  # unknown name: "did you mean ..."
                _fail(str(exc))
            return _broken_task_command(name, str(exc))
        return type(self).make_command(name, task)


def _add_task_group(
    name: str, help_text: str, make_command: Callable[[str, Task], click.Command]
) -> None:
    """Add ``dnrt NAME TASK``: a group whose subcommand for each task is ``make_command``'s."""
    group = type(f"{name.title()}Commands", (TaskCommands,), {"make_command": make_command})
    sub_app = typer.Typer(cls=group, help=help_text, no_args_is_help=True, add_completion=False)
    app.add_typer(sub_app, name=name)


def _command(name: str, help_text: str, func, cls=TaskCommand, **settings):
    """A Typer command built from ``func`` (whose signature defines its options); the first
    sentence of ``help_text`` is its line in the group's list."""
    holder = typer.Typer(add_completion=False)
    short = help_text.split(". ")[0].rstrip(".")
    holder.command(name=name, help=help_text, short_help=short, cls=cls, **settings)(func)
    return typer.main.get_command(holder)


def _broken_task_command(name: str, message: str):
    """Stands in for a plugin that fails to import: listed, and fails in one line when run."""

    def broken() -> None:
        _fail(message)

    settings = {"ignore_unknown_options": True, "allow_extra_args": True}
    return _command(name, "[failed to import]", broken, cls=TyperCommand,
                    context_settings=settings, add_help_option=False)  # fmt: skip


def _next_steps(task: str, summary: dict[str, Any]) -> str:
    """Where the run's files are, and one command comparing it with its GELU baseline."""
    run_dir = Path(summary["run_dir"])
    lines = [
        f"run folder: {run_dir}",
        f"curves:     {run_dir / 'metrics.jsonl'} (plot: dnrt plot curves {run_dir})",
        f"checkpoint: {run_dir / 'best.pt'} (score: dnrt eval {run_dir / 'best.pt'})",
    ]
    mechanism = summary.get("mechanism")
    if mechanism not in (None, "gelu"):
        base = run_dir.with_name(run_dir.name.replace(f"-{mechanism}-", "-gelu-"))
        if base == run_dir:
            base = run_dir.with_name(f"{run_dir.name}-gelu")
        lines += [
            "compare with the GELU baseline (same config):",
            f"  dnrt train {task} --config {run_dir / 'config.yaml'} --act gelu --no-arr "
            f"--out {base} && dnrt plot curves {run_dir} {base} --out {run_dir / 'vs_gelu.png'}",
        ]
    return "\n".join(lines)


def _train_command(name: str, task: Task):
    @user_errors
    @with_config_options(task_options(task))
    def train(
        config: ConfigOpt = None,
        set_: SetOpt = None,
        out: Annotated[  # a str: Path("") would silently be the current folder
            str | None, typer.Option(help="Output folder (default runs/<task>/...).")
        ] = None,
        resume: Annotated[
            bool, typer.Option(help="Continue the run in --out from last.pt.")
        ] = False,
        overwrite: Annotated[bool, typer.Option(help="Replace a run already in --out.")] = False,
        act: ActOpt = None,
        arr: ArrOpt = None,
        quiet: Annotated[bool, typer.Option(help="No progress output.")] = False,
        *,
        config_options: dict[str, Any],
    ) -> None:
        from dnrt_core.engine import run
        from dnrt_core.mechanisms.distributed import is_main_process

        overrides = _collect_overrides(config_options, act, arr, set_)
        summary = run(task, overrides, out, config_file=config, resume=resume,
                      overwrite=overwrite, quiet=quiet)  # fmt: skip
        if not quiet and "final" in summary and is_main_process():
            typer.echo(_next_steps(name, summary))

    help_text = (
        f"{task.description}. Writes config.yaml, metrics.jsonl, last.pt, best.pt, "
        "summary.json to --out."
    )
    return _command(name, help_text, train)


_add_task_group(
    "train",
    "Train a task: `dnrt train TASK --epochs 2 ...`; `dnrt train TASK --help` lists the "
    "shared options and the task's own.",
    _train_command,
)


# --------------------------------------------------------------------------- eval


@app.command("eval")
@user_errors
def eval_cmd(
    checkpoint: Annotated[Path, typer.Argument(help="A run's best.pt or last.pt (or its folder).")],
    data_dir: DataDirOpt = None,
    split: Annotated[str | None, typer.Option(help="Split to score (default: test).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda.")] = "auto",
) -> None:
    """Score a saved run (top-1/top-5 or AUC/AP) with its ARR/DPA memories restored."""
    from dnrt_core.engine import evaluate_checkpoint

    checkpoint = _checkpoint_of(checkpoint)  # a run folder stands for its best.pt
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
    """Export a saved run's model for inference (ONNX or torch.export).

    The model is exported in eval mode with a dynamic batch size and checked against the
    eager model on a training batch."""
    from dnrt_core.tools.export import export_run

    path, diff = export_run(
        checkpoint, format.lower(), out, data_dir=data_dir, dynamo=not torchscript
    )
    check = "" if diff is None else f" (max |diff| vs eager on a training batch: {diff:.2e})"
    typer.echo(f"wrote {path}{check}")


# --------------------------------------------------------------------------- compare


def _split_list(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def _compare_command(name: str, task: Task):
    @user_errors
    @with_config_options(task_options(task, COMPARE_SHARED, skip=COMPARE_SWEPT))
    def compare_cmd(
        acts: Annotated[
            str | None, typer.Option(help="Mechanisms, comma-separated: e.g. gelu,raa,dnrt,dpa.")
        ] = None,
        models: Annotated[str | None, typer.Option(help="Models, comma-separated.")] = None,
        seeds: Annotated[
            int | None,
            typer.Option(
                help="Seeds per cell (0..N-1; default 1). With a --config preset that lists "
                "trials: its first N trials (default all)."
            ),
        ] = None,
        out: Annotated[Path, typer.Option(help="Sweep folder (finished runs are reused).")] = (
            Path("runs/compare")
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
        jobs: Annotated[
            int | None,
            typer.Option(
                help="Runs at once, each in its own process on its GPU or its share of "
                "the cores (slurm: most array tasks at once)."
            ),
        ] = None,
        launcher: Annotated[
            str,
            typer.Option(help="local, slurm, or submitit-local / submitit-debug (no cluster)."),
        ] = "local",
        slurm_partition: Annotated[str | None, typer.Option(help="Slurm partition.")] = None,
        slurm_gpus_per_job: Annotated[
            int, typer.Option(help="GPUs per run (more than 1: DDP, one rank per GPU).")
        ] = 0,
        slurm_time: Annotated[
            str | None, typer.Option(help="Time limit per run: minutes or D-HH:MM:SS (1 day).")
        ] = None,
        slurm_account: Annotated[str | None, typer.Option(help="Slurm account.")] = None,
        slurm_config: Annotated[
            Path | None,
            typer.Option(help="YAML with a slurm: section of other submitit settings."),
        ] = None,
        slurm_array: Annotated[
            bool, typer.Option(help="One job array (default) or one job per run.")
        ] = True,
        wait: Annotated[
            bool, typer.Option(help="Slurm: wait for the jobs, then the table.")
        ] = False,
        *,
        config_options: dict[str, Any],
    ) -> None:
        launch_options = {
            "jobs": jobs, "launcher": launcher, "slurm_partition": slurm_partition,
            "slurm_gpus_per_job": slurm_gpus_per_job, "slurm_time": slurm_time,
            "slurm_account": slurm_account, "slurm_config": slurm_config,
            "slurm_array": slurm_array, "wait": wait,
        }  # fmt: skip
        _compare(task, acts, models, seeds, out, from_, metric, which, rows, cols, export,
                 config, set_, config_options, launch_options)  # fmt: skip

    help_text = (
        f"{task.description}. A mechanism × model × seed (or preset trial) sweep and the "
        "paper-style table "
        "(markdown + CSV)."
    )
    return _command(name, help_text, compare_cmd)


def _compare(task, acts, models, seeds, out, from_, metric, which, rows, cols, export, config,
             set_, config_options, launch_options) -> None:  # fmt: skip
    import functools as ft

    from dnrt_core.engine import run
    from dnrt_core.tools import compare

    if from_ is None:
        if not acts or not models:
            _fail("--acts and --models are needed (or --from DIR to rebuild a table)")
        if out.exists() and not out.is_dir():
            _fail(f"--out {out} is a file, not a folder")
        base = _collect_overrides(config_options, None, None, set_)
        trials = compare.preset_trials(config) if config is not None else None
        if trials is None and seeds is None:
            seeds = 1
        plan = compare.plan_sweep(
            task.name, _split_list(acts), _split_list(models), seeds, out, base, trials=trials
        )
        failed: list = []
        if launch_options["launcher"] == "local" and launch_options["jobs"] in (None, 1):
            run_fn = ft.partial(run, task, config_file=config, quiet=True)
            summaries = compare.run_sweep(plan, run_fn)
        else:
            summaries, failed = _launch(task.name, plan, out, config, base, **launch_options)
            if summaries is None:  # submitted, not waited for
                return
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
    if from_ is None and failed:
        names = ", ".join(item.name for item, _ in failed)
        _fail(f"{len(failed)} of {len(plan)} runs failed: {names}", code=1)


def _launch(task_name, plan, out, config, base, *, jobs, launcher, slurm_partition,
            slurm_gpus_per_job, slurm_time, slurm_account, slurm_config, slurm_array,
            wait):  # fmt: skip
    """--jobs / --launcher: (summaries, failed runs), or (None, []) when the runs were
    submitted and not waited for."""
    from dnrt_core.tools.launch import launch_plan
    from dnrt_core.tools.slurm import SlurmOptions, load_slurm_config

    slurm = SlurmOptions(
        slurm_partition, slurm_gpus_per_job, slurm_time, slurm_account, slurm_array,
        extra=load_slurm_config(slurm_config) if slurm_config else {},
    )  # fmt: skip
    result = launch_plan(
        plan, task_name, launcher=launcher, jobs=jobs, slurm=slurm, config_file=config,
        device=base.get("device"), wait=wait,
    )  # fmt: skip
    if result.pending:
        where = f"`dnrt compare {task_name} --from {out}`"
        typer.echo(f"{len(result.pending)} run(s) queued; {where} builds the table "
                   "when they are done", err=True)  # fmt: skip
        return None, []
    if not result.summaries:
        _fail(f"all {len(result.failed)} runs failed (see the lines above)", code=1)
    return result.summaries, result.failed


_add_task_group(
    "compare",
    "Run a mechanism × model × seed sweep on a task and print the paper-style table: "
    "`dnrt compare TASK --acts gelu,dnrt --models vit_tiny`.",
    _compare_command,
)


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

    from dnrt_core.engine import resolve_device
    from dnrt_core.engine.plugins import load_task
    from dnrt_core.errors import unknown_name_error
    from dnrt_core.tools.profile import format_profile_table, profile_mechanisms

    zoo = load_task(task)
    if model not in zoo.model_names():
        raise unknown_name_error(f"{task} model", model, zoo.model_names())
    if batch_size <= 0 or img_size <= 0 or num_classes <= 0 or repeats < 0:
        _fail("--img-size, --batch-size and --num-classes must be positive, --repeats >= 0")
    dev = resolve_device(device)
    mechanisms = ["baseline", *_split_list(acts)]

    def build():
        return zoo.create_model(model, num_classes, img_size=img_size).to(dev)

    example = torch.randn(batch_size, 3, img_size, img_size, device=dev)
    rows = profile_mechanisms(
        build, example, num_classes, mechanisms, baseline_act=baseline_act, repeats=repeats
    )
    header = f"{model} @ {img_size} px, batch {batch_size}, {dev}"
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


def _png_path(out: str, default_name: str) -> Path:
    """``--out`` of a figure: a folder (existing, or written with a trailing slash) gets
    ``default_name`` inside it."""
    if not out.strip():
        _fail("--out is empty; give a PNG path or a folder")
    path = Path(out)
    if out.endswith(("/", os.sep)) or path.is_dir():
        return path / default_name
    return path


@plot_app.command("responses")
@user_errors
def plot_responses_cmd(
    runs: Annotated[
        list[Path], typer.Argument(help="Run folders or checkpoints (e.g. GELU, DNRT).")
    ],
    out: Annotated[str, typer.Option(help="PNG to write (or a folder for responses.png).")] = (
        "responses.png"
    ),
    data_dir: DataDirOpt = None,
    samples: Annotated[int, typer.Option(help="Test samples to collect.")] = 512,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda.")] = "cpu",
) -> None:
    """Figure-2 style response distributions (class token per block, aggregated per class)."""
    import torch

    from dnrt_core.engine import load_run
    from dnrt_core.tools.plots import collect_responses, figure2_sites, plot_response_distributions

    by_run = {}
    for path in runs:
        checkpoint = _checkpoint_of(path)
        built, _ = load_run(checkpoint, data_dir=data_dir, device=device)
        split = built.data.splits[built.task.report_split]
        if isinstance(split, torch.Tensor):  # graph tasks: node indices, not input batches
            _fail(
                f"plot responses draws runs evaluated on batches of inputs (image tasks); "
                f"{checkpoint} is a {built.task.name!r} run"
            )
        layers, aggregated, pool = figure2_sites(built.model)
        batches = (built.task.batch_inputs(b, built.device) for b in split)
        label = f"{path.name if path.is_dir() else path.parent.name}"
        by_run[label] = collect_responses(
            built.model, batches, [*layers, aggregated], pool=pool, max_samples=samples
        )
    png = _png_path(out, "responses.png")
    written = plot_response_distributions(by_run, png, layers=layers, aggregated_site=aggregated)
    typer.echo(f"wrote {written}")


@plot_app.command("curves")
@user_errors
def plot_curves_cmd(
    runs: Annotated[list[Path], typer.Argument(help="Run folders (or sweep folders).")],
    out: Annotated[str, typer.Option(help="PNG to write (or a folder for curves.png).")] = (
        "curves.png"
    ),
    metrics: Annotated[
        str | None, typer.Option(help="Comma-separated metrics (default: losses + primary).")
    ] = None,
) -> None:
    """Loss / accuracy over epochs of several runs on one figure."""
    from dnrt_core.tools.plots import plot_curves

    written = plot_curves(runs, _png_path(out, "curves.png"), metrics=_split_list(metrics) or None)
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
    # a scheduler's SIGTERM ends a run like Ctrl-C: a failed start is undone, one line says
    # what the run folder holds
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if "--debug" in sys.argv[2:]:  # also accepted after the command: dnrt train ... --debug
        sys.argv.remove("--debug")
        sys.argv.insert(1, "--debug")
    app()


if __name__ == "__main__":
    main()
