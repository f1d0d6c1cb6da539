"""Aggregated responses: one d-vector per sample, taken from a site's output."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch

POOLS = ("token", "avg", "mean", "node", "auto")


def hidden_state(output: Any) -> torch.Tensor:
    """The hidden-state tensor of a site's output: the tensor itself; a tuple's or list's
    first tensor; a mapping's or dataclass's ``last_hidden_state``, else its first tensor
    field (Hugging Face ``ModelOutput`` is both). Nested containers are searched in order."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping):
        items = list(output.values())
        preferred = output.get("last_hidden_state")
    elif dataclasses.is_dataclass(output) and not isinstance(output, type):
        items = [getattr(output, f.name) for f in dataclasses.fields(output)]
        preferred = getattr(output, "last_hidden_state", None)
    elif isinstance(output, (tuple, list)):
        items, preferred = list(output), None
    else:
        raise TypeError(
            f"cannot take a response from a site output of type {type(output).__name__}"
        )
    if isinstance(preferred, torch.Tensor):
        return preferred
    for item in items:
        if isinstance(item, (torch.Tensor, Mapping, tuple, list)) or dataclasses.is_dataclass(item):
            try:
                return hidden_state(item)
            except TypeError:
                continue
    raise TypeError(f"no tensor in a site output of type {type(output).__name__}")


def aggregate(x: Any, pool: str = "auto") -> torch.Tensor:
    """Reduce a site output to ``(B, d)`` (a tuple or ``ModelOutput`` is first reduced to
    its hidden-state tensor, see :func:`hidden_state`).

    * ``token``: class token, ``x[:, 0]`` of ``(B, T, d)`` (ViT).
    * ``avg``: global average pool of ``(B, C, H, W)`` (CNN); also accepts ``(B, d)``.
    * ``mean``: mean over tokens of ``(B, T, d)`` (sequence models, ViTs without a class token).
    * ``node``: the ``(N, d)`` node embeddings themselves (GNN).
    * ``auto``: ``node`` for 2-D, ``token`` for 3-D, ``avg`` for 4-D inputs.
    """
    x = hidden_state(x)
    if pool == "auto":
        pool = {2: "node", 3: "token", 4: "avg"}.get(x.dim(), "")
        if not pool:
            raise ValueError(f"cannot aggregate a {x.dim()}-D response; give pool explicitly")
    if pool == "node":
        if x.dim() != 2:
            raise ValueError(f"pool='node' expects (N, d), got {tuple(x.shape)}")
        return x
    if pool == "token":
        if x.dim() != 3:
            raise ValueError(f"pool='token' expects (B, T, d), got {tuple(x.shape)}")
        return x[:, 0]
    if pool == "mean":
        return x.mean(dim=1) if x.dim() == 3 else x.flatten(2).mean(-1) if x.dim() == 4 else x
    if pool == "avg":
        if x.dim() == 4:
            return x.mean(dim=(2, 3))
        if x.dim() == 3:  # channels-last token maps (B, T, d)
            return x.mean(dim=1)
        return x
    raise ValueError(f"unknown pool {pool!r}; valid: {', '.join(POOLS)}")


def class_indices(targets: torch.Tensor) -> torch.Tensor:
    """Integer class labels from hard ``(B,)`` or soft/one-hot ``(B, K)`` targets."""
    if targets.dim() == 2:
        return targets.argmax(dim=1)
    return targets.long()
