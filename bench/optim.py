"""Optimizers of the recipes: SGD with momentum (all four papers) or AdamW (the `tiny` preset)."""

from __future__ import annotations

from typing import Any, Iterable

import torch


def build_optimizer(param_groups: Iterable[dict[str, Any]], recipe) -> torch.optim.Optimizer:
    groups = []
    for group in param_groups:  # an adapter may scale a group's lr (e.g. a new head at x10)
        group = dict(group)
        group["lr"] = recipe.lr * group.pop("lr_scale", 1.0)
        groups.append(group)
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=recipe.lr, weight_decay=recipe.weight_decay)
    raise ValueError(f"unknown optimizer {recipe.optimizer!r}")
