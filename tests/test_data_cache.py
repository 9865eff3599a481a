"""The decode-and-resize cache gives the same tensors as decoding every time; the benchmark prints both rates."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image

from tests import layouts
from bench.data import get_card, open_dataset
from bench.data.cache import resized_images
from bench.data.transforms import normalize, reference_test_input
from bench.data.valsplit import carve
from bench.loaders import split_dataset
from bench.recipe import Recipe
from tests.conftest import run_bench


def photo_dataset(root, count_per_class=2):
    """A UFG folder of odd-sized real-photo JPEGs and PNGs, including grayscale and 16-bit ones."""
    import skimage.data

    layouts.write_ufg(root, 80, {"train": count_per_class, "test": 1})
    photo = skimage.data.astronaut()
    rng = np.random.default_rng(0)
    for i, path in enumerate(sorted((root / "images").rglob("*.png"))[:40]):
        h, w = rng.integers(30, 90, size=2)
        y, x = rng.integers(0, 400, size=2)
        crop = Image.fromarray(photo[y:y + h, x:x + w])
        if i % 4 == 1:
            crop = crop.convert("L")
        elif i % 4 == 2:
            crop = Image.fromarray((np.asarray(crop.convert("L"), np.uint16) * 257 + i).astype(np.uint16))
        crop.save(path, format="JPEG" if i % 4 == 3 else "PNG")
    return root


def stack(dataset):
    return torch.stack([dataset[i][0] for i in range(len(dataset))])


def test_cached_test_transform_is_bit_identical(tmp_path):
    photo_dataset(tmp_path / "cotton")
    data = open_dataset(get_card("cotton"), tmp_path)
    recipe = Recipe(img_size=24, resize_size=29, batch_size=4)
    for split in (data.train, data.test):
        resized = resized_images(split, recipe.resize_size, tmp_path / "cache", "cotton", progress=False)
        assert resized.shape == (len(split), 29, 29, 3) and resized.dtype == np.uint8
        direct = stack(split_dataset(split, "test", recipe))
        cached = stack(split_dataset(split, "test", recipe, {split.name: resized}))
        assert direct.shape == (len(split), 3, 24, 24) and direct.dtype == torch.uint8
        assert torch.equal(direct, cached)
        reference = torch.stack([reference_test_input(split.open(i), recipe) for i in range(len(split))])
        assert torch.equal(normalize(cached), reference)  # what the model sees, bit for bit


@pytest.mark.parametrize("jitter", [0.0, 0.4])
def test_cached_train_transform_matches_under_the_same_rng(tmp_path, jitter):
    photo_dataset(tmp_path / "cotton", count_per_class=1)
    split = open_dataset(get_card("cotton"), tmp_path).train
    recipe = Recipe(img_size=24, resize_size=29, batch_size=4, color_jitter=jitter)
    resized = resized_images(split, recipe.resize_size, tmp_path / "cache", "cotton", progress=False)
    torch.manual_seed(3)
    direct = stack(split_dataset(split, "train", recipe))
    torch.manual_seed(3)
    cached = stack(split_dataset(split, "train", recipe, {"train": resized}))
    assert torch.equal(direct, cached)


def test_carved_views_read_their_parents_cache(tmp_path):
    photo_dataset(tmp_path / "cotton")
    train = open_dataset(get_card("cotton"), tmp_path).train
    part_train, part_val = carve(train, 0.25, seed=1)
    recipe = Recipe(img_size=24, resize_size=29, batch_size=4)
    resized = resized_images(train, recipe.resize_size, tmp_path / "cache", "cotton", progress=False)
    for view in (part_train, part_val):
        assert torch.equal(stack(split_dataset(view, "test", recipe)),
                           stack(split_dataset(view, "test", recipe, {"train": resized})))
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1  # one cache for the parent, none per view


def test_cache_is_rebuilt_when_an_image_changes(tmp_path):
    root = photo_dataset(tmp_path / "cotton", count_per_class=1)
    split = open_dataset(get_card("cotton"), tmp_path).test
    first = np.array(resized_images(split, 16, tmp_path / "cache", "cotton", progress=False))
    Image.new("RGB", (20, 20), (255, 0, 0)).save(root / "images" / split.items[0][0])
    second = resized_images(split, 16, tmp_path / "cache", "cotton", progress=False)
    assert np.array_equal(second[0], np.full((16, 16, 3), (255, 0, 0), np.uint8))
    assert np.array_equal(first[1:], second[1:])


def test_hf_images_are_cached_too(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    path = layouts.write_parquet(tmp_path / "c.parquet", 80)
    split = open_dataset(get_card("cotton"), tmp_path, {"path": str(path)}).test
    recipe = Recipe(img_size=8, resize_size=10, batch_size=4)
    resized = resized_images(split, 10, tmp_path / "cache", "cotton", progress=False)
    assert torch.equal(stack(split_dataset(split, "test", recipe)),
                       stack(split_dataset(split, "test", recipe, {"test": resized})))


def test_pipeline_benchmark_prints_both_rates():
    result = run_bench("data", "--benchmark", "--bench-images", "8", "--bench-size", "64x48", "--batch-size", "4",
                       "--resize-size", "32", "--img-size", "24", "--workers", "0")
    assert result.returncode == 0, result.stderr
    uncached = re.search(r"decode \+ resize every time:\s+([\d.]+) images/s", result.stdout)
    cached = re.search(r"decode-and-resize cache:\s+([\d.]+) images/s", result.stdout)
    assert uncached and cached and float(uncached.group(1)) > 0 and float(cached.group(1)) > 0, result.stdout
    assert "8 generated 64x48 JPEGs" in result.stdout
