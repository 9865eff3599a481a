"""DataLoaders for one cell: seeded shuffling, worker seeding, pinned memory on a GPU.

Every loader has its own generator seeded from the run seed, so loader workers' seeds derive
from it and iterating an evaluation loader never draws from the global RNG (which would make
the training randomness depend on how often one evaluates). Under `accelerate launch` the
prepared train loader shards each epoch's shuffled batches over the ranks, and accelerate keeps
the generator in step across ranks, so the shuffle differs per epoch and ranks never overlap.
"""

from __future__ import annotations

import random
from typing import Mapping

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from bench.data.dataset import CachedImageDataset, ImageListDataset
from bench.data.items import Split
from bench.data.transforms import test_transform, train_transform

ROLE_STREAM = {"train": 0, "test": 1, "val": 2}  # offsets the seed of each role's generator (train: the seed)


def seed_worker(worker_id: int) -> None:
    """Give numpy/random in each worker a seed derived from the run seed (torch's is already)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def split_dataset(split: Split, role: str, recipe, resized: Mapping[str, np.ndarray] | None = None) -> Dataset:
    """The Dataset of one split for a role (train: random crop etc.; test/val: centre crop).

    `resized` maps a (parent) split name to its decode-and-resize cache array; a view of a split
    (the carved train/val parts) is a `Subset` of its parent's Dataset, so both share one cache.
    """
    make = train_transform if role == "train" else test_transform
    base = split.parent if split.parent is not None else split
    if resized is not None and base.name in resized:
        dataset = CachedImageDataset(resized[base.name], base.labels, make(recipe, resized=True))
    else:
        dataset = ImageListDataset(base, make(recipe))
    return Subset(dataset, split.indices) if split.parent is not None else dataset


def build_loaders(splits: Mapping[str, Split], recipe, seed: int, workers: int, device: torch.device,
                  resized: Mapping[str, np.ndarray] | None = None) -> dict[str, DataLoader]:
    """One loader per role in `splits` ("train" shuffled with full batches only; "test", "val" in order)."""
    loaders = {}
    for role, split in splits.items():
        generator = torch.Generator()
        generator.manual_seed(seed + 7919 * ROLE_STREAM[role])
        train = role == "train"
        loaders[role] = DataLoader(
            split_dataset(split, role, recipe, resized),
            batch_size=recipe.batch_size if train else recipe.eval_batch_size,
            shuffle=train,
            drop_last=train,
            generator=generator,
            num_workers=workers,
            pin_memory=device.type == "cuda",
            persistent_workers=workers > 0,
            worker_init_fn=seed_worker if workers > 0 else None,
        )
    return loaders


def forever(loader):
    """Iterate a loader epoch after epoch (steps-based training), reshuffling each epoch."""
    epoch = 0
    while True:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        yielded = False
        for batch in loader:
            yielded = True
            yield batch
        if not yielded:
            raise RuntimeError("the training loader yields no batches (train split smaller than the global batch)")
        epoch += 1
