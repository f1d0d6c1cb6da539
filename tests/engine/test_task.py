"""The plugin API: declared options become config keys (``Task.config_defaults``)."""

from __future__ import annotations

import pytest

from dnrt_core.engine import ConfigOption, Task
from dnrt_core.engine.config import ConfigError, build_config


class OptionsTask(Task):
    name = "options"
    options = (
        ConfigOption("width", "model.width", int, "Width.", 99),  # in default_config: 16 wins
        ConfigOption("noise", "data.noise", float, "New key.", 0.5),
        ConfigOption("steps", "extra.steps", int, "New section."),
    )

    def default_config(self):
        return {"data": {"dataset": "x"}, "model": {"name": "m", "width": 16}}


def test_option_keys_join_the_defaults():
    defaults = OptionsTask().config_defaults()
    assert defaults["model"] == {"name": "m", "width": 16}
    assert defaults["data"] == {"dataset": "x", "noise": 0.5}
    assert defaults["extra"] == {"steps": None}
    cfg = build_config(defaults, overrides={"data.noise": 0.1, "extra.steps": 3})
    assert cfg["data"]["noise"] == 0.1 and cfg["extra"]["steps"] == 3


def test_option_under_a_value_is_an_error():
    class Bad(OptionsTask):
        options = (ConfigOption("x", "model.name.x", int, "Under a string."),)

    with pytest.raises(ConfigError, match="--x"):
        Bad().config_defaults()


def test_builtin_task_options_name_existing_keys():
    from tasks.graph import GraphTask
    from tasks.image import ImageTask
    from tasks.longtail import LongTailTask

    for task in (ImageTask(), GraphTask(), LongTailTask()):
        keys = build_config(task.default_config())
        for opt in task.options:  # built-in tasks keep their defaults in default_config
            node = keys
            for part in opt.key.split("."):
                assert part in node, f"{task.name}: {opt.flag} -> missing {opt.key}"
                node = node[part]
