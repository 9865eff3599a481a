"""Image transforms of the originals (torchvision v2), sized by the recipe.

train: Resize((R, R)) -> RandomCrop(S) -> [ColorJitter] -> RandomHorizontalFlip
test:  Resize((R, R)) -> CenterCrop(S)
The aspect ratio is not kept (FFVT, TransFG, Mix-ViT and RAMS-Trans all squash to R x R first).

The per-image transforms end in a uint8 CHW tensor; `normalize` (ToDtype(float32, scale) and the
ImageNet Normalize the originals use) runs on the whole batch on the device, with the same
torchvision kernels, so the numbers are the same while loader workers, pinned memory and the
host-to-device copy move a quarter of the bytes. Decoded images go through PIL (PIL's Resize and
ColorJitter, as in the originals). Images from the decode-and-resize cache are uint8 tensors:
crop and flip are pure indexing (identical to PIL's, drawing the same random numbers), and
ColorJitter goes through PIL and back so its arithmetic stays PIL's.
"""

from __future__ import annotations

import torch
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resize_op(size: int) -> v2.Resize:
    return v2.Resize((size, size), interpolation=InterpolationMode.BILINEAR, antialias=True)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 `[..., 3, H, W]` -> float32 in ImageNet normalisation (x / 255 - mean) / std."""
    return F.normalize(F.to_dtype(images, torch.float32, scale=True), list(IMAGENET_MEAN), list(IMAGENET_STD))


def train_transform(recipe, resized: bool = False) -> v2.Compose:
    """`resized=True`: the input is Resize((R, R))'s output as a uint8 tensor (the decode-and-resize cache)."""
    ops = ([] if resized else [resize_op(recipe.resize_size)]) + [v2.RandomCrop(recipe.img_size)]
    if recipe.color_jitter:
        cj = recipe.color_jitter
        ops += ([v2.ToPILImage()] if resized else []) + [v2.ColorJitter(brightness=cj, contrast=cj, saturation=cj)]
    if recipe.hflip:
        ops.append(v2.RandomHorizontalFlip(0.5))
    return v2.Compose(ops + [v2.ToImage()])


def test_transform(recipe, resized: bool = False) -> v2.Compose:
    ops = ([] if resized else [resize_op(recipe.resize_size)]) + [v2.CenterCrop(recipe.img_size)]
    return v2.Compose(ops + [v2.ToImage()])


def reference_test_input(image, recipe) -> torch.Tensor:
    """The originals' per-image float pipeline in one piece (slow; for tests): Resize -> CenterCrop ->
    ToTensor -> Normalize on a PIL image, giving the float32 tensor the model sees."""
    ops = [resize_op(recipe.resize_size), v2.CenterCrop(recipe.img_size), v2.ToImage(),
           v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return v2.Compose(ops)(image)
