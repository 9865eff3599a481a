"""DataLoaders for one cell: seeded shuffling, worker seeding, pinned memory on a GPU."""

from __future__ import annotations

import random

import numpy as np
import torch
from torch.utils.data import DataLoader

from bench.data.dataset import CachedImageDataset, ImageListDataset
from bench.data.items import DatasetSplits
from bench.data.transforms import test_transform, train_transform


def seed_worker(worker_id: int) -> None:
    """Give numpy/random in each worker a seed derived from the run seed (torch's is already)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def build_datasets(data: DatasetSplits, recipe, resized: dict | None = None):
    """Train and test Datasets; `resized` maps split name -> decode-and-resize cache array."""
    if resized:
        return (CachedImageDataset(resized["train"], data.train.labels, train_transform(recipe, resized=True)),
                CachedImageDataset(resized["test"], data.test.labels, test_transform(recipe, resized=True)))
    return (ImageListDataset(data.train, train_transform(recipe), data.loader),
            ImageListDataset(data.test, test_transform(recipe), data.loader))


def build_loaders(data: DatasetSplits, recipe, seed: int, workers: int, device: torch.device,
                  resized: dict | None = None) -> tuple[DataLoader, DataLoader]:
    """Train loader (shuffled by a generator seeded with the run seed, full batches only) and test loader."""
    train_set, test_set = build_datasets(data, recipe, resized)
    generator = torch.Generator()
    generator.manual_seed(seed)
    common = dict(
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        worker_init_fn=seed_worker if workers > 0 else None,
    )
    train = DataLoader(train_set, batch_size=recipe.batch_size, shuffle=True, drop_last=True, generator=generator, **common)
    test = DataLoader(test_set, batch_size=recipe.eval_batch_size, shuffle=False, drop_last=False, **common)
    return train, test


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
