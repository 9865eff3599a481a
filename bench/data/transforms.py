"""Image transforms of the originals (torchvision v2), sized by the recipe.

train: Resize((R, R)) -> RandomCrop(S) -> [ColorJitter] -> RandomHorizontalFlip -> tensor -> Normalize
test:  Resize((R, R)) -> CenterCrop(S) -> tensor -> Normalize
The aspect ratio is not kept (FFVT, TransFG, Mix-ViT and RAMS-Trans all squash to R x R first);
normalisation is ImageNet's, as the originals use for these datasets.
"""

from __future__ import annotations

import torch
from torchvision.transforms import InterpolationMode, v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resize_op(size: int) -> v2.Resize:
    return v2.Resize((size, size), interpolation=InterpolationMode.BILINEAR, antialias=True)


def to_normalized_tensor() -> list:
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]


def train_transform(recipe, resized: bool = False) -> v2.Compose:
    """`resized=True`: the input is already Resize((R, R))'s output (the decode-and-resize cache)."""
    ops = ([] if resized else [resize_op(recipe.resize_size)]) + [v2.RandomCrop(recipe.img_size)]
    if recipe.color_jitter:
        cj = recipe.color_jitter
        ops.append(v2.ColorJitter(brightness=cj, contrast=cj, saturation=cj))
    if recipe.hflip:
        ops.append(v2.RandomHorizontalFlip(0.5))
    return v2.Compose(ops + to_normalized_tensor())


def test_transform(recipe, resized: bool = False) -> v2.Compose:
    ops = ([] if resized else [resize_op(recipe.resize_size)]) + [v2.CenterCrop(recipe.img_size)]
    return v2.Compose(ops + to_normalized_tensor())
