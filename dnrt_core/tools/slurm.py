"""Sweeps as cluster jobs through submitit: Slurm, or submitit's local and debug executors.

    >>> plan = compare.plan_sweep("image", ["gelu", "dnrt"], ["vit_tiny"], 3, "runs/cmp")
    >>> result = submit(plan, "image", SlurmOptions(partition="gpu", gpus_per_job=1))
    >>> result.pending  # [(run, job id), ...]; ``dnrt compare --from`` tabulates them when done

Each unfinished run becomes one job (by default all of them one job array). A job runs
:func:`dnrt_core.tools.launch.run_spec`, which skips, resumes or starts its run folder, so
a job that submitit requeues after a timeout or a preemption resumes from ``last.pt``.
Each run's ``job.json`` names its job; submitting again skips finished runs and runs whose
job is still queued or running. ``submitit`` is an optional dependency (``dnrt[slurm]``).
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import compare
from .compare import SweepRun
from .launch import (
    JOB_FILE,
    SweepInterrupted,
    SweepResult,
    collect,
    one_line,
    run_spec,
    say,
    spec_of,
)

#: ``--launcher`` values handled here, and the submitit cluster each one uses
CLUSTERS = {"slurm": "slurm", "submitit-local": "local", "submitit-debug": "debug"}
_ACTIVE_SLURM_STATES = {
    "PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED",
}  # fmt: skip


@dataclass
class SlurmOptions:
    """Job settings: the ``--slurm-*`` options plus ``extra`` submitit parameters (the
    ``slurm:`` section of ``--slurm-config``; generic ones such as ``mem_gb``,
    ``cpus_per_task`` as they are, Slurm ones such as ``qos``, ``constraint``, ``setup``
    with or without the ``slurm_`` prefix)."""

    partition: str | None = None
    gpus_per_job: int = 0
    time: str | int | None = None
    account: str | None = None
    array: bool = True
    parallelism: int | None = None  # most array tasks running at once (--jobs)
    extra: dict[str, Any] = field(default_factory=dict)


#: minutes when --slurm-time is not given (submitit's own default is 5)
DEFAULT_TIME_MIN = 24 * 60

_GENERIC = {"name", "timeout_min", "mem_gb", "nodes", "cpus_per_task", "gpus_per_node",
            "tasks_per_node", "stderr_to_stdout"}  # fmt: skip


def parse_slurm_time(value: str | int) -> int:
    """Minutes of a Slurm time limit: ``90``, ``MM:SS``, ``HH:MM:SS``, ``D-HH[:MM[:SS]]``."""
    text = str(value).strip()
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
    if not match or int(text.split("-")[-1].split(":")[0] or 0) < 0:
        raise ValueError(
            f"--slurm-time {value!r}: use minutes or Slurm's MM:SS, HH:MM:SS, D-HH:MM:SS"
        )
    days, a, b, c = match.groups()
    if days is not None:  # D-HH, D-HH:MM, D-HH:MM:SS
        seconds = int(days) * 86400 + int(a) * 3600 + int(b or 0) * 60 + int(c or 0)
    elif c is not None:  # HH:MM:SS
        seconds = int(a) * 3600 + int(b) * 60 + int(c)
    elif b is not None:  # MM:SS
        seconds = int(a) * 60 + int(b)
    else:
        seconds = int(a) * 60
    minutes = -(-seconds // 60)
    if minutes <= 0:
        raise ValueError(f"--slurm-time {value!r} must be positive")
    return minutes


def load_slurm_config(path: str | Path) -> dict[str, Any]:
    """The ``slurm:`` section of a YAML file (extra submitit parameters)."""
    from ..engine.config import load_yaml

    data = load_yaml(path)
    unknown = sorted(set(data) - {"slurm"})
    if unknown or not isinstance(data.get("slurm", {}), dict):
        raise ValueError(f"{path}: expected one mapping section 'slurm:', found {unknown or data}")
    return dict(data.get("slurm") or {})


def _submitit():
    try:
        import submitit
    except ImportError:
        raise ValueError(
            "this launcher needs submitit: pip install 'dnrt[slurm]' (or submitit>=1.5)"
        ) from None
    return submitit


def make_executor(launcher: str, folder: str | Path, options: SlurmOptions, name: str):
    """A submitit ``AutoExecutor`` for ``launcher`` with ``options`` applied."""
    if launcher not in CLUSTERS:
        raise ValueError(f"unknown launcher {launcher!r}; valid: {', '.join(CLUSTERS)}")
    gpus = int(options.gpus_per_job or 0)
    if gpus < 0:
        raise ValueError(f"--slurm-gpus-per-job must be >= 0, got {gpus}")
    params: dict[str, Any] = {
        "name": name,
        "timeout_min": parse_slurm_time(options.time) if options.time else DEFAULT_TIME_MIN,
        "tasks_per_node": max(1, gpus),  # one DDP rank per GPU
        "slurm_partition": options.partition,
        "slurm_account": options.account,
        "slurm_array_parallelism": options.parallelism,
    }
    if gpus:
        params["gpus_per_node"] = gpus
    for key, value in options.extra.items():
        known = key in _GENERIC or key.startswith(("slurm_", "local_", "debug_"))
        params[key if known else f"slurm_{key}"] = value
    executor = _submitit().AutoExecutor(folder=folder, cluster=CLUSTERS[launcher])
    try:
        executor.update_parameters(**params)
    except (NameError, AssertionError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"submitit rejected the job settings: {first}") from None
    return executor


class SweepJob:
    """The callable a submitit job runs: one planned run. ``checkpoint`` makes submitit
    requeue it on timeout or preemption; the requeued job resumes from ``last.pt``."""

    def __init__(self, spec: dict[str, Any]):
        self.spec = spec

    def __call__(self) -> dict[str, Any] | None:
        submitit = _submitit()
        env = submitit.JobEnvironment()
        if env.num_tasks > 1:  # e.g. --slurm-gpus-per-job 4: one rank per task, DDP in the run
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        cpus = int(os.environ.get("SLURM_CPUS_PER_TASK", "0") or 0)
        if cpus:
            import torch

            torch.set_num_threads(cpus)
        launch = {"launcher": self.spec["launcher"], "job_id": str(env.job_id)}
        if self.spec["launcher"] != "submitit-debug":
            return run_spec(self.spec, launch)
        try:  # the debug executor opens pdb on an exception: report it instead
            return run_spec(self.spec, launch)
        except Exception as exc:
            return {"_error": one_line(exc)}

    def checkpoint(self) -> Any:
        return _submitit().helpers.DelayedSubmission(SweepJob(self.spec))


def _job_record(run_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((run_dir / JOB_FILE).read_text())
    except (OSError, ValueError):
        return None


def job_active(record: dict[str, Any] | None) -> bool:
    """Whether the job recorded in a run's ``job.json`` is still queued or running."""
    if not record or not record.get("job_id"):
        return False
    launcher, job_id = record.get("launcher"), str(record["job_id"])
    if launcher == "submitit-local":  # job id = pid of submitit's local controller
        if record.get("host") not in (None, socket.gethostname()):
            return False  # another machine's process: not ours to see
        try:
            cmdline = Path(f"/proc/{int(job_id)}/cmdline").read_bytes()
        except (OSError, ValueError):
            return False
        return b"submitit" in cmdline
    if launcher == "slurm":
        submitit = _submitit()
        state = submitit.SlurmJob(folder=record["folder"], job_id=job_id).state
        return state.split()[0].upper() in _ACTIVE_SLURM_STATES if state else False
    return False


def _job_outcome(job, item: SweepRun) -> str | None:
    """None when the run finished, else a one-line reason."""
    if (item.run_dir / "summary.json").exists():
        return None
    try:
        value = job.results()[0]  # rank 0's, for jobs of several tasks
    except Exception as exc:  # submitit's FailedJobError / UncompletedJobError hold the trace
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        errors = [ln for ln in lines if re.match(r"^[A-Za-z_.]*(Error|Exception)\b", ln)]
        return (errors[-1] if errors else lines[0] if lines else type(exc).__name__)[:300]
    if isinstance(value, dict) and "_error" in value:
        return value["_error"]
    return "ended without summary.json (stopped early; submit again to continue)"


def submit(
    plan: Sequence[SweepRun],
    task: str,
    options: SlurmOptions,
    *,
    launcher: str = "slurm",
    config_file: str | Path | None = None,
    wait: bool = False,
    folder: str | Path | None = None,
    progress: bool = True,
    poll_s: float = 1.0,
) -> SweepResult:
    """Submit the unfinished runs of ``plan`` through submitit (a job array unless
    ``options.array`` is False). Finished runs and runs whose job is still queued or running
    are skipped. Without ``wait`` the pending jobs are returned; ``dnrt compare --from``
    builds the table once they are done. Each run's ``job.json`` records its job."""
    total = len(plan)
    result = SweepResult()
    todo: list[tuple[int, SweepRun]] = []
    for number, item in enumerate(plan, 1):
        record = _job_record(item.run_dir)
        if compare.run_state(item) == "done":
            say(f"[{number}/{total}] {item.name}: finished, skipped", progress)
        elif job_active(record):
            say(f"[{number}/{total}] {item.name}: already queued as job {record['job_id']}",
                 progress)  # fmt: skip
            result.pending.append((item, str(record["job_id"])))
        else:
            todo.append((number, item))
    if not todo:
        return collect(plan, result)
    root = Path(folder) if folder is not None else plan[0].run_dir.parent / "submitit"
    executor = make_executor(launcher, root, options, name=f"dnrt-{task}")
    calls = [SweepJob(spec_of(item, task, config_file, launcher)) for _, item in todo]
    if options.array and len(calls) > 1:
        with executor.batch():
            jobs = [executor.submit(call) for call in calls]
    else:
        jobs = [executor.submit(call) for call in calls]
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    for (number, item), job in zip(todo, jobs, strict=True):
        item.run_dir.mkdir(parents=True, exist_ok=True)
        record = {"launcher": launcher, "job_id": str(job.job_id), "folder": str(job.paths.folder),
                  "submitted": stamp, "host": socket.gethostname()}  # fmt: skip
        (item.run_dir / JOB_FILE).write_text(json.dumps(record, indent=2) + "\n")
        say(f"[{number}/{total}] {item.name}: submitted as job {job.job_id}", progress)
    if not wait:
        result.pending.extend(
            (item, str(job.job_id)) for (_, item), job in zip(todo, jobs, strict=True)
        )
        return collect(plan, result)
    waiting = list(zip(todo, jobs, strict=True))
    try:
        while waiting:
            for entry in [e for e in waiting if e[1].done()]:
                waiting.remove(entry)
                (number, item), job = entry
                reason = _job_outcome(job, item)
                head = f"[{number}/{total}] {item.name}"
                if reason is None:
                    say(f"{head}: done (job {job.job_id})", progress)
                else:
                    result.failed.append((item, reason))
                    say(f"{head}: failed (job {job.job_id}: {reason}); logs: {job.paths.folder}",
                         progress)  # fmt: skip
            if waiting:
                time.sleep(poll_s)
    except KeyboardInterrupt:
        ids = ", ".join(str(j.job_id) for _, j in waiting)
        raise SweepInterrupted(
            f"stopped waiting; jobs {ids} keep running (dnrt compare --from builds the table)"
        ) from None
    return collect(plan, result)
