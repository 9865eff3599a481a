"""DataLoaders for one cell, and the resumable stream of training batches.

Training order: a permutation per epoch drawn from a generator seeded with the run seed; full
batches only. Augmentation: seeded per sample (see `bench.data.sampling`). Evaluation: each split
in order, every sample exactly once (accelerate's `gather_for_metrics` drops the padding). Every
loader has its own generator seeded from the run seed, so loader workers' seeds derive from it and
iterating an evaluation loader never draws from the global RNG (which would make the training
randomness depend on how often one evaluates). Under `accelerate launch` the prepared train loader
shards each epoch's batches over the ranks, and accelerate keeps the generator in step across ranks.
"""

from __future__ import annotations

import random
from typing import Any, Mapping

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from bench.data.dataset import CachedImageDataset, ImageListDataset
from bench.data.items import Split
from bench.data.sampling import EpochRandomSampler, SampleSeeded
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
    """One loader per role in `splits`: "train" in epoch permutations with full batches only (and
    per-sample augmentation seeds), "test" and "val" in order."""
    loaders = {}
    for role, split in splits.items():
        generator = torch.Generator()
        generator.manual_seed(seed + 7919 * ROLE_STREAM[role])
        dataset = split_dataset(split, role, recipe, resized)
        common = dict(
            generator=generator,
            num_workers=workers,
            pin_memory=device.type == "cuda",
            persistent_workers=workers > 0,
            worker_init_fn=seed_worker if workers > 0 else None,
        )
        if role == "train":
            loaders[role] = DataLoader(SampleSeeded(dataset, seed), batch_size=recipe.batch_size, drop_last=True,
                                       sampler=EpochRandomSampler(len(dataset), generator), **common)
        else:
            loaders[role] = DataLoader(dataset, batch_size=recipe.eval_batch_size, shuffle=False, drop_last=False,
                                       **common)
    return loaders


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

    def __init__(self, loader, accelerator=None):  # the accelerator is needed only to resume mid-epoch
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
