"""Long-tailed classification plugin: CIFAR-10/100-LT and digits-lt, ResNet-32 and ViT-Tiny."""

from .data import longtail_profile, select_longtail, shot_group, shot_groups
from .models import CifarResNet, create_model, resnet32
from .task import LongTailTask

__all__ = [
    "CifarResNet",
    "LongTailTask",
    "create_model",
    "longtail_profile",
    "resnet32",
    "select_longtail",
    "shot_group",
    "shot_groups",
]
