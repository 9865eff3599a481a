"""`--with-data DATASET`: training batches from the real input pipeline instead of a synthetic tensor.

The train split is read like `bench.py run` reads it: the card's reader, the decode-and-resize
cache (`bench.data.cache`, unless `--no-cache`), `bench.loaders.build_loaders` (per-sample
augmentation, worker processes, pinned memory) and uint8 batches normalised on the device
(`bench.data.transforms.normalize`). The end-to-end rate over the synthetic rate of the same
model, batch and step says whether the pipeline keeps up.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bench.data import check_files, get_card, materialize, open_dataset
from bench.data.cache import resized_images
from bench.data.transforms import normalize
from bench.errors import UsageError
from bench.loaders import BatchStream, build_loaders


@dataclass
class DataSource:
    """A dataset's train split, opened once; `feed(recipe, device)` gives a batch stream for a recipe."""

    name: str
    card: Any
    split: Any
    workers: int
    cache_dir: Path | None
    _feed: tuple | None = None  # (key, DataFeed): one live loader, reused while the recipe's data side is equal

    @classmethod
    def open(cls, dataset: str, data_root: Path, options: dict, workers: int, cache_dir: Path | None) -> "DataSource":
        card = get_card(dataset)
        if card.is_group:
            raise UsageError(f"--with-data takes one dataset, and {card.name} is a group of {', '.join(card.members)}")
        materialize(card, data_root)
        data = open_dataset(card, data_root, options.get(card.name))
        check_files(data)
        return cls(card.name, card, data.train, workers, cache_dir)

    def feed(self, recipe, device: torch.device) -> "DataFeed":
        key = (recipe.img_size, recipe.resize_size, recipe.batch_size, recipe.color_jitter, recipe.hflip)
        if self._feed is None or self._feed[0] != key:
            self._feed = None  # let the previous loader's workers go before starting new ones
            if len(self.split) < recipe.batch_size:
                raise UsageError(f"--with-data {self.name}: the train split has {len(self.split)} images, "
                                 f"fewer than one batch of {recipe.batch_size}")
            resized = None
            if self.cache_dir is not None:
                resized = {self.split.name: resized_images(self.split, recipe.resize_size, self.cache_dir, self.name)}
            loader = build_loaders({"train": self.split}, recipe, seed=0, workers=self.workers, device=device,
                                   resized=resized)["train"]
            self._feed = (key, DataFeed(BatchStream(loader), device))
        return self._feed[1]


class DataFeed:
    """Next training batch on the device: uint8 images normalised there, labels beside them."""

    def __init__(self, stream: BatchStream, device: torch.device):
        self.stream = stream
        self.device = device

    def __call__(self) -> tuple[torch.Tensor, torch.Tensor]:
        images, targets = next(self.stream)
        images = images.to(self.device, non_blocking=True)
        targets = targets.to(self.device, non_blocking=True)
        return normalize(images), targets
