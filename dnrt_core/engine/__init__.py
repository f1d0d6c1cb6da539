"""The training engine: everything between a task plugin and a finished run folder.

* :mod:`.trainer` — ``run()``, the :class:`Trainer` loop, building, resuming, evaluation;
* :mod:`.task` — the plugin API (:class:`Task`, :class:`TaskData`, :class:`ConfigOption`);
* :mod:`.plugins` — task discovery through the ``dnrt.tasks`` entry points;
* :mod:`.config` — defaults, YAML recipes, ``--set`` overrides and validation;
* :mod:`.run_dir` — locked run folders that never lose or mix a run;
* :mod:`.schema`, :mod:`.data_checks` — config domains and data checks, before training;
* :mod:`.checkpoint` — atomic, ``weights_only`` checkpoints and RNG state;
* :mod:`.optim` — optimiser and lr schedule from the ``train`` section (timm factories);
* :mod:`.data` — epoch-seeded samplers and loaders (DDP-aware);
* :mod:`.metrics` — classification metrics shared by tasks.
"""

from ..mechanisms.names import mechanism_name
from .config import ConfigOption
from .run_dir import RUN_FILES, RunDir
from .task import Task, TaskData
from .trainer import (
    Built,
    NonFiniteLossError,
    RunError,
    Trainer,
    build,
    build_tuned_model,
    check_compatible,
    count_parameters,
    default_out_dir,
    evaluate_checkpoint,
    init_distributed,
    load_run,
    memories_in_sync,
    resolve_config,
    resolve_device,
    run,
    set_seed,
)

__all__ = [
    "RUN_FILES",
    "Built",
    "ConfigOption",
    "NonFiniteLossError",
    "RunDir",
    "RunError",
    "Task",
    "TaskData",
    "Trainer",
    "build",
    "build_tuned_model",
    "check_compatible",
    "count_parameters",
    "default_out_dir",
    "evaluate_checkpoint",
    "init_distributed",
    "load_run",
    "mechanism_name",
    "memories_in_sync",
    "resolve_config",
    "resolve_device",
    "run",
    "set_seed",
]
