"""Validation splits for honest model selection (`--val-fraction`, `--val-split`).

The originals select their "best accuracy" on the test split. fgbench reports last-step test
accuracy as the headline and, when a validation split is used, the test accuracy at the
evaluation with the best validation accuracy (`top1_valsel`). The validation split is either
carved from train before training (stratified per class, seeded by the run seed, so train
shrinks) or the split the dataset ships (UFG `anno/val.txt`, ImageFolder `val/` beside `test/`,
a Hugging Face `validation` split).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.data.items import DatasetSplits, Split
from bench.errors import UsageError


def stratified_counts(counts: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """How many images of each class go to val: round(fraction * N) in all, split over the classes by
    largest remainder of `fraction * count` (ties in a seeded random order), each class keeping one
    image for training."""
    total = int(np.floor(fraction * counts.sum() + 0.5))
    capacity = counts - 1
    if total > capacity.sum():
        raise UsageError(f"--val-fraction {fraction} asks for {total} validation images but only {capacity.sum()} "
                         "can be carved while keeping one training image per class; use a smaller fraction")
    quota = fraction * counts
    take = np.minimum(np.floor(quota).astype(np.int64), capacity)
    order = np.lexsort((rng.random(len(counts)), -(quota - take)))  # largest remainder first, random ties
    while take.sum() < total:
        for c in order:
            if take.sum() == total:
                break
            if take[c] < capacity[c]:
                take[c] += 1
    return take


def carve(split: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """(train, val) views of `split`, disjoint, covering it, stratified by label; same seed, same carve."""
    if not 0.0 < fraction < 1.0:
        raise UsageError(f"--val-fraction must be between 0 and 1, got {fraction}")
    labels = np.asarray(split.labels)
    classes, counts = np.unique(labels, return_counts=True)
    rng = np.random.default_rng(seed)
    take = stratified_counts(counts, fraction, rng)
    if take.sum() == 0:
        raise UsageError(f"--val-fraction {fraction} of {len(split)} training images carves no validation image; "
                         "use a larger fraction")
    val: list[int] = []
    for cls, n in zip(classes, take):
        members = np.flatnonzero(labels == cls)
        val.extend(rng.permutation(members)[:n].tolist())
    chosen = set(val)
    train_idx = [i for i in range(len(split)) if i not in chosen]
    return split.view("train", train_idx), split.view("val", sorted(val))


def choose_val(data: DatasetSplits, recipe, seed: int) -> tuple[Split, Split | None, dict[str, Any] | None]:
    """The training split, the validation split (or None) and what to record about it."""
    if recipe.val_split == "shipped":
        if "val" not in data.splits:
            raise UsageError(f"{data.name}: --val-split shipped, but the dataset at {data.root} ships no val split; "
                             "use --val-fraction F to carve one from train")
        val = data.splits["val"]
        return data.train, val, {"source": "shipped", "n_val": len(val), "hash": val.content_hash(),
                                 "origin": val.source}
    if recipe.val_fraction <= 0:
        return data.train, None, None
    train, val = carve(data.train, recipe.val_fraction, seed)
    return train, val, {"source": "carved", "fraction": recipe.val_fraction, "seed": seed, "n_val": len(val),
                        "hash": val.content_hash(), "train_hash": train.content_hash(),
                        "n_train_before": len(data.train)}
