"""Built-in task plugins (image, graph, longtail), one sub-package each."""
