"""The image classification task plugin (``dnrt train image``)."""

from .task import ImageTask

__all__ = ["ImageTask"]
