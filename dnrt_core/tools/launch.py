"""Run the planned runs of a sweep in parallel: local worker processes (``dnrt compare --jobs``).

    >>> plan = compare.plan_sweep("image", ["gelu", "dnrt"], ["vit_tiny"], 3, "runs/cmp")
    >>> result = run_local(plan, "image", jobs=2)  # two worker processes at a time

``run_local`` starts one subprocess per run (``python -m dnrt_core.tools.launch SPEC``), at
most ``jobs`` at a time. Worker slot ``k`` gets GPU ``k mod n`` (``CUDA_VISIBLE_DEVICES``)
when the runs use CUDA, and its own ``cores // jobs`` CPU cores (affinity and intra-op
threads). :mod:`.slurm` submits the runs as cluster jobs instead (``--launcher slurm``);
:func:`launch_plan` picks one of the two.

Either way a run folder is classified when its run starts, as in
:func:`dnrt_core.tools.compare.run_sweep`: ``summary.json`` = finished (skipped),
``last.pt`` = resumed, anything else starts afresh. So a sweep that was interrupted,
killed or timed out continues when launched again, and a Slurm job that is requeued
after a timeout or a preemption resumes from its last epoch.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import compare
from .compare import SweepRun

if TYPE_CHECKING:
    from .slurm import SlurmOptions

#: ``--launcher`` values: our process pool, Slurm, and submitit's two executors without a cluster
LAUNCHERS = ("local", "slurm", "submitit-local", "submitit-debug")
#: per-run files the launchers write beside the engine's
WORKER_LOG = "worker.log"
JOB_FILE = "job.json"
#: seconds a stopped worker gets to exit after SIGTERM before SIGKILL
STOP_GRACE_S = 10.0


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C / SIGTERM stopped a parallel sweep; finished runs are kept."""


@dataclass
class SweepResult:
    """What a launch left: summaries of finished runs (plan order), failures, pending jobs."""

    summaries: list[dict[str, Any]] = field(default_factory=list)
    failed: list[tuple[SweepRun, str]] = field(default_factory=list)
    #: (run, job id) of submitted jobs not waited for
    pending: list[tuple[SweepRun, str]] = field(default_factory=list)


def say(message: str, progress: bool) -> None:
    if progress:
        print(message, file=sys.stderr, flush=True)


def collect(plan: Sequence[SweepRun], result: SweepResult) -> SweepResult:
    """Fill ``result.summaries`` with every finished run of ``plan``, in plan order."""
    result.summaries = [
        compare.read_summary(item.run_dir / "summary.json")
        for item in plan
        if (item.run_dir / "summary.json").exists()
    ]
    return result


# --------------------------------------------------------------------------- slots


def cpu_cores() -> list[int]:
    """The CPU cores this process may run on."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def visible_gpus() -> list[str]:
    """CUDA device ids as ``CUDA_VISIBLE_DEVICES`` names them ([] without CUDA)."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    listed = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return listed[:count] if listed else [str(i) for i in range(count)]


@dataclass
class Slot:
    """Worker slot ``index``: the cores it is pinned to, its threads and device."""

    index: int
    threads: int
    cores: list[int]
    device: str  # what the runs in this slot use: cpu, cuda:<id> (physical id), or as asked
    env: dict[str, str]


def plan_slots(
    jobs: int,
    device: str | None = None,
    *,
    cores: Sequence[int] | None = None,
    gpus: Sequence[str] | None = None,
) -> list[Slot]:
    """``jobs`` worker slots. With ``device`` auto/cuda and GPUs present, slot ``k`` sees only
    GPU ``gpus[k % len(gpus)]``; an explicit ``cuda:N`` or ``cpu`` is left to every run.
    Each slot gets ``max(1, len(cores) // jobs)`` intra-op threads on its own cores (shared
    round-robin when there are more slots than cores)."""
    if jobs < 1:
        raise ValueError(f"--jobs must be at least 1, got {jobs}")
    cores = list(cpu_cores() if cores is None else cores)
    name = str(device or "auto").lower()
    if gpus is None:
        gpus = visible_gpus() if name in ("auto", "cuda") else []
    threads = max(1, len(cores) // jobs)
    slots = []
    for k in range(jobs):
        if len(cores) >= jobs:
            mine = cores[k * threads : (k + 1) * threads]
        else:
            mine = [cores[k % len(cores)]]
        env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        if gpus and name in ("auto", "cuda"):
            gpu = gpus[k % len(gpus)]
            env["CUDA_VISIBLE_DEVICES"] = gpu
            dev = f"cuda:{gpu}"
        else:
            dev = "cpu" if name == "auto" else name
        slots.append(Slot(k, threads, mine, dev, env))
    return slots


# --------------------------------------------------------------------------- one run


def spec_of(item: SweepRun, task: str, config_file: str | Path | None, launcher: str) -> dict:
    return {
        "task": task,
        "overrides": dict(item.overrides),
        "out": str(item.run_dir),
        "config_file": None if config_file is None else str(config_file),
        "launcher": launcher,
    }


def run_spec(spec: dict[str, Any], launch: dict[str, Any]) -> dict[str, Any] | None:
    """Train one planned run in this process: skip it when finished, resume it from
    ``last.pt`` or start it afresh. ``launch`` goes into ``summary.json``."""
    from ..engine import run

    item = SweepRun("", "", 0, spec["overrides"], Path(spec["out"]))
    state = compare.run_state(item)
    if state == "done":
        return compare.read_summary(item.run_dir / "summary.json")
    if state == "start" and int(os.environ.get("RANK", "0")) == 0:  # one DDP rank clears
        compare.clear_partial(item)
    return run(
        spec["task"],
        spec["overrides"],
        out=spec["out"],
        config_file=spec["config_file"],
        resume=state == "resume",
        quiet=True,
        launch=launch,
    )


def one_line(exc: BaseException) -> str:
    """``Type: first line of the message`` of an exception."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _die_with_parent() -> None:
    """Linux: get SIGTERM when the launching process dies (no orphaned workers)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def worker_main(argv: Sequence[str]) -> int:
    """Entry point of a local worker process: ``python -m dnrt_core.tools.launch SPEC_JSON``."""
    spec = json.loads(argv[0])
    _die_with_parent()
    slot = spec["slot"]
    if slot["cores"] and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, slot["cores"])
    import torch

    torch.set_num_threads(int(slot["threads"]))
    launch = {"launcher": "local", "job_id": None, "slot": slot["index"], "jobs": spec["jobs"]}
    try:
        run_spec(spec, launch)
    except Exception as exc:  # one line for the parent's report; the traceback stays in the log
        import traceback

        traceback.print_exc()
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 1
    return 0


# --------------------------------------------------------------------------- local pool


@dataclass
class _Worker:
    number: int  # 1-based position in the plan
    item: SweepRun
    slot: Slot
    proc: subprocess.Popen
    log: Any
    started: float


def _last_error(log_path: Path) -> str | None:
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        if line.startswith("error: "):
            return line[len("error: ") :]
    return None


def _failure_reason(code: int, log_path: Path) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name}"
    return _last_error(log_path) or f"exit code {code}"


def _start_worker(number: int, item: SweepRun, slot: Slot, spec: dict, jobs: int) -> _Worker:
    item.run_dir.mkdir(parents=True, exist_ok=True)
    log = open(item.run_dir / WORKER_LOG, "ab")  # noqa: SIM115 - closed when the worker ends
    payload = {
        **spec,
        "jobs": jobs,
        "slot": {"index": slot.index, "threads": slot.threads, "cores": slot.cores},
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "dnrt_core.tools.launch", json.dumps(payload)],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **slot.env},
        start_new_session=True,  # Ctrl-C reaches the parent only; it stops the workers
    )
    return _Worker(number, item, slot, proc, log, time.monotonic())


def _stop(workers: Sequence[_Worker]) -> None:
    for w in workers:
        if w.proc.poll() is None:
            w.proc.terminate()
    deadline = time.monotonic() + STOP_GRACE_S
    for w in workers:
        try:
            w.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            w.proc.kill()
            w.proc.wait()
        w.log.close()


class _StopRequested(Exception):
    pass


def run_local(
    plan: Sequence[SweepRun],
    task: str,
    *,
    jobs: int,
    config_file: str | Path | None = None,
    device: str | None = None,
    progress: bool = True,
    poll_s: float = 0.2,
) -> SweepResult:
    """Run ``plan`` in up to ``jobs`` worker processes (see :func:`plan_slots`).

    A failed or killed run is reported in one line and the others go on. Ctrl-C (or SIGTERM)
    stops every worker and raises :class:`SweepInterrupted`; finished runs keep their
    ``summary.json`` and interrupted ones resume from ``last.pt`` when launched again."""
    slots = plan_slots(jobs, device)
    total = len(plan)
    result = SweepResult()
    queue: deque[tuple[int, SweepRun]] = deque()
    for number, item in enumerate(plan, 1):
        state = compare.run_state(item)
        if state == "done":
            say(f"[{number}/{total}] {item.name}: finished, skipped", progress)
        else:
            queue.append((number, item))
    free = deque(slots)
    running: list[_Worker] = []

    def on_term(signum, frame):  # SIGTERM (scancel, kill) stops the workers like Ctrl-C
        raise _StopRequested

    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, on_term) if main_thread else None
    try:
        while queue or running:
            while queue and free:
                number, item = queue.popleft()
                slot = free.popleft()
                verb = "resuming" if compare.run_state(item) == "resume" else "running"
                spec = spec_of(item, task, config_file, "local")
                worker = _start_worker(number, item, slot, spec, jobs)
                running.append(worker)
                say(
                    f"[{number}/{total}] {item.name}: {verb} (pid {worker.proc.pid}, "
                    f"{slot.device}, {slot.threads} thread{'s' * (slot.threads > 1)})",
                    progress,
                )
            time.sleep(poll_s)
            for w in [w for w in running if w.proc.poll() is not None]:
                running.remove(w)
                w.log.close()
                free.append(w.slot)
                code = w.proc.returncode
                seconds = time.monotonic() - w.started
                head = f"[{w.number}/{total}] {w.item.name}"
                if code == 0 and (w.item.run_dir / "summary.json").exists():
                    say(f"{head}: done in {seconds:.1f}s", progress)
                    continue
                reason = (
                    "ended without summary.json (stopped early; run again to continue)"
                    if code == 0
                    else _failure_reason(code, w.item.run_dir / WORKER_LOG)
                )
                result.failed.append((w.item, reason))
                say(f"{head}: failed ({reason}); log: {w.item.run_dir / WORKER_LOG}", progress)
    except (KeyboardInterrupt, _StopRequested):
        _stop(running)
        raise SweepInterrupted(
            f"interrupted; stopped {len(running)} running worker(s), finished runs are kept "
            "(run the same command again to continue)"
        ) from None
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    return collect(plan, result)


def launch_plan(
    plan: Sequence[SweepRun],
    task: str,
    *,
    launcher: str = "local",
    jobs: int | None = None,
    slurm: SlurmOptions | None = None,
    config_file: str | Path | None = None,
    device: str | None = None,
    wait: bool = False,
    progress: bool = True,
) -> SweepResult:
    """``dnrt compare --jobs/--launcher``: :func:`run_local` with ``jobs`` workers (default
    1), or :func:`submit` with ``jobs`` as the most array tasks running at once."""
    if launcher not in LAUNCHERS:
        from ..errors import unknown_name_error

        raise unknown_name_error("launcher", launcher, list(LAUNCHERS))
    if jobs is not None and jobs < 1:
        raise ValueError(f"--jobs must be at least 1, got {jobs}")
    from .slurm import SlurmOptions, submit

    if launcher == "local":
        if slurm is not None and slurm != SlurmOptions():
            raise ValueError("the --slurm-* options need --launcher slurm (or submitit-local)")
        return run_local(
            plan, task, jobs=jobs or 1, config_file=config_file, device=device, progress=progress
        )
    options = slurm or SlurmOptions()
    if jobs is not None:
        options.parallelism = jobs
    return submit(plan, task, options, launcher=launcher, config_file=config_file,
                  wait=wait or launcher == "submitit-debug", progress=progress)  # fmt: skip


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1:]))
