"""torch Datasets over a split: lazy decoding (always RGB), or reads from the resize cache."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from bench.data.images import open_rgb  # noqa: F401  (re-exported: the decoder every reader uses)
from bench.data.items import Split


class CachedImageDataset(Dataset):
    """Images read from the decode-and-resize cache; the transform starts after the Resize."""

    def __init__(self, resized, labels: Sequence[int], transform: Callable | None = None):
        self.resized = resized  # [N, R, R, 3] uint8, usually a read-only memmap
        self.labels = list(labels)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        image = Image.fromarray(np.asarray(self.resized[index]))  # the same PIL image Resize produced
        if self.transform is not None:
            image = self.transform(image)
        return image, self.labels[index]


class ImageListDataset(Dataset):
    """Decodes each item when it is asked for (the originals' lazy loaders, minus their bugs)."""

    def __init__(self, split: Split, transform: Callable | None = None):
        self.split = split
        self.transform = transform

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int):
        image = self.split.open(index)
        if self.transform is not None:
            image = self.transform(image)
        return image, self.split.items[index][1]
