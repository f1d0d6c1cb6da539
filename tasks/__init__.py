"""Built-in task plugins (image, graph, longtail), one sub-package each, and
:mod:`tasks.common`, the code they share (not a task)."""
