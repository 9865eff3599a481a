"""torch Datasets over a split: lazy decoding (always RGB), or reads from the resize cache."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from bench.data.images import open_rgb  # noqa: F401  (re-exported: the decoder every reader uses)
from bench.data.items import Split


class CachedImageDataset(Dataset):
    """Images read from the decode-and-resize cache as uint8 CHW tensors; the transform starts after the Resize."""

    def __init__(self, resized, labels: Sequence[int], transform: Callable | None = None):
        self.resized = resized  # [N, R, R, 3] uint8, usually a read-only memmap
        self.labels = list(labels)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        pixels = torch.from_numpy(np.array(self.resized[index]))  # a copy: the memmap is read-only
        image = tv_tensors.Image(pixels.permute(2, 0, 1))  # the pixels Resize produced, as CHW
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
        image = self.split.decode(index)
        if self.transform is not None:
            image = self.transform(image)
        return image, self.split.items[index][1]
