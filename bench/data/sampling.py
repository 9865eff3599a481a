"""Training-order and augmentation randomness that survives restarts, workers and ranks.

`EpochRandomSampler` draws one permutation per epoch from a generator seeded by the run seed (as
a shuffled DataLoader does) and tags each index with its epoch. `SampleSeeded` then seeds the
random augmentations of sample i in epoch e from (run seed, e, i) alone. The augmentation a sample
gets therefore does not depend on how many loader workers there are, on which rank loads it, on
prefetching, or on whether the run was stopped and resumed from a checkpoint; the global torch
RNG is left for the model (dropout, token mixing) so a checkpoint's RNG state is enough to resume
bit-for-bit.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset, Sampler

_MIX = 0x9E3779B97F4A7C15  # 64-bit golden-ratio constant: spreads nearby (seed, epoch, index) apart


def sample_seed(seed: int, epoch: int, index: int) -> int:
    value = (seed * _MIX + epoch) % 2**64
    value = (value * _MIX + index) % 2**64
    return value % 2**63


class EpochRandomSampler(Sampler[int]):
    """A fresh permutation each epoch from `generator`; yields `epoch * n + index`."""

    def __init__(self, size: int, generator: torch.Generator):
        self.size = size
        self.generator = generator  # accelerate keeps this one in sync across ranks
        self.epoch = 0

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        base = self.epoch * self.size
        for index in torch.randperm(self.size, generator=self.generator).tolist():
            yield base + index


class SampleSeeded(Dataset):
    """Wraps a dataset so item `epoch * n + i` is item i with augmentation RNG seeded by (seed, epoch, i)."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, tagged: int):
        epoch, index = divmod(int(tagged), len(self.dataset))
        with torch.random.fork_rng(devices=[]):  # the CPU generator only: CUDA's stay the model's
            torch.default_generator.manual_seed(sample_seed(self.seed, epoch, index))
            return self.dataset[index]
