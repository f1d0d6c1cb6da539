"""Aggregated responses: one d-vector per sample, taken from a site's output."""

from __future__ import annotations

import torch

POOLS = ("token", "avg", "mean", "node", "auto")


def aggregate(x: torch.Tensor, pool: str = "auto") -> torch.Tensor:
    """Reduce a site output to ``(B, d)``.

    * ``token``: class token, ``x[:, 0]`` of ``(B, T, d)`` (ViT).
    * ``avg``: global average pool of ``(B, C, H, W)`` (CNN); also accepts ``(B, d)``.
    * ``mean``: mean over tokens of ``(B, T, d)`` (sequence models, ViTs without a class token).
    * ``node``: the ``(N, d)`` node embeddings themselves (GNN).
    * ``auto``: ``node`` for 2-D, ``token`` for 3-D, ``avg`` for 4-D inputs.
    """
    if isinstance(x, (tuple, list)):
        x = x[0]
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
