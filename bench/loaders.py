"""DataLoaders for one cell, and the resumable stream of training batches.

Training order: a permutation per epoch drawn from a generator seeded with the run seed; full
batches only. Augmentation: seeded per sample (see `bench.data.sampling`). Evaluation: the test
split in order, every sample exactly once (accelerate's `gather_for_metrics` drops the padding).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from bench.data.dataset import CachedImageDataset, ImageListDataset
from bench.data.items import DatasetSplits
from bench.data.sampling import EpochRandomSampler, SampleSeeded
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
    """Train loader (epoch permutations from the run seed, full batches only) and test loader."""
    train_set, test_set = build_datasets(data, recipe, resized)
    generator = torch.Generator()
    generator.manual_seed(seed)
    common = dict(
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        worker_init_fn=seed_worker if workers > 0 else None,
    )
    train = DataLoader(SampleSeeded(train_set, seed), batch_size=recipe.batch_size, drop_last=True,
                       sampler=EpochRandomSampler(len(train_set), generator), generator=generator, **common)
    test = DataLoader(test_set, batch_size=recipe.eval_batch_size, shuffle=False, drop_last=False, **common)
    return train, test


def _find_sampler(loader) -> EpochRandomSampler:
    for obj in (loader, getattr(loader, "batch_sampler", None), getattr(getattr(loader, "batch_sampler", None), "batch_sampler", None)):
        sampler = getattr(obj, "sampler", None)
        if isinstance(sampler, EpochRandomSampler):
            return sampler
    raise TypeError("the training loader was not built by bench.loaders.build_loaders")


class BatchStream:
    """Training batches epoch after epoch, with a position that can be saved and restored.

    The position is (epoch, batches consumed in it, the generator state at the epoch's start);
    restoring it replays the same permutation and skips the consumed batches without loading them.
    """

    def __init__(self, loader, accelerator):
        self.loader = loader
        self.accelerator = accelerator
        self.sampler = _find_sampler(loader)
        self.generator = self.sampler.generator
        self.epoch = 0
        self.consumed = 0
        self._epoch_state: torch.Tensor | None = None
        self._pending: dict[str, Any] | None = None
        self._iterator = None

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "consumed": self.consumed,
                "generator_state": self._epoch_state.tolist() if self._epoch_state is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._pending = state
        self._iterator = None

    def _start_epoch(self) -> None:
        if self._pending is not None and self._pending.get("generator_state") is not None:
            state, self._pending = self._pending, None
            self.epoch, self.consumed = state["epoch"], state["consumed"]
            self._epoch_state = torch.tensor(state["generator_state"], dtype=torch.uint8)
            self.generator.set_state(self._epoch_state)
            self.sampler.epoch = self.epoch
            loader = self.accelerator.skip_first_batches(self.loader, self.consumed) if self.consumed else self.loader
        else:
            self._pending = None
            self._epoch_state = self.generator.get_state()
            self.sampler.epoch = self.epoch
            self.consumed = 0
            loader = self.loader
        self._iterator = iter(loader)

    def __iter__(self):
        return self

    def __next__(self):
        for _ in range(2):
            if self._iterator is None:
                self._start_epoch()
            try:
                batch = next(self._iterator)
            except StopIteration:
                if self.consumed == 0:
                    break
                self._iterator = None
                self.epoch += 1
                continue
            self.consumed += 1
            return batch
        raise RuntimeError("the training loader yields no batches (train split smaller than the global batch)")
