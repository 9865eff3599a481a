"""The torch Dataset over a split: lazy PIL decoding, always RGB."""

from __future__ import annotations

from typing import Callable

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from bench.data.items import Split


def open_rgb(path) -> Image.Image:
    """Decode any PIL-readable image as 8-bit RGB (grayscale, palette, RGBA, CMYK alike)."""
    with Image.open(path) as image:
        return image.convert("RGB")


class CachedImageDataset(Dataset):
    """Images read from the decode-and-resize cache; the transform starts after the Resize."""

    def __init__(self, resized, labels: list[int], transform: Callable | None = None):
        self.resized = resized  # [N, R, R, 3] uint8, usually a read-only memmap
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        image = Image.fromarray(np.asarray(self.resized[index]))  # the same PIL image Resize produced
        if self.transform is not None:
            image = self.transform(image)
        return image, self.labels[index]


class ImageListDataset(Dataset):
    def __init__(self, split: Split, transform: Callable | None = None, loader: Callable | None = None):
        self.split = split
        self.transform = transform
        self.loader = loader

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int):
        rel, label = self.split.items[index]
        image = self.loader(self.split, index) if self.loader else open_rgb(self.split.root / rel)
        if self.transform is not None:
            image = self.transform(image)
        return image, label
