"""Input-pipeline benchmark (`bench.py data --benchmark`): train-transform images/s without and with
the decode-and-resize cache.

By default on a generated set of JPEGs at a realistic size (1000x800, photo content, quality
90), else on the train split of `--datasets`. Each mode runs two epochs through a DataLoader with
persistent workers and times only the second: worker start-up and the first read of each file
(the OS page cache, the memmap's pages) are warm-up, excluded from the rate. The cache build is
a one-off cost and reported on its own.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from bench.data.cache import resized_images
from bench.data.items import Split
from bench.errors import UsageError
from bench.loaders import seed_worker, split_dataset
from bench.recipe import Recipe


def parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UsageError(f"--bench-size expects WIDTHxHEIGHT like 1000x800, got {text!r}") from None
    if width < 1 or height < 1:
        raise UsageError(f"--bench-size must be positive, got {text!r}")
    return width, height


def generate_jpegs(folder: Path, count: int, size: tuple[int, int], seed: int = 0) -> Split:
    """`count` JPEGs of `size` cut from scikit-image's sample photographs (real image statistics)."""
    import skimage.data

    photos = [np.asarray(getattr(skimage.data, name)())[..., :3]
              for name in ("astronaut", "coffee", "chelsea", "rocket")]
    rng = np.random.default_rng(seed)
    width, height = size
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for index in range(count):
        photo = photos[index % len(photos)]
        h, w = photo.shape[:2]
        y, x = rng.integers(0, h // 4), rng.integers(0, w // 4)
        crop = Image.fromarray(photo[y:y + 3 * h // 4, x:x + 3 * w // 4]).resize(size, Image.BICUBIC)
        noisy = np.clip(np.asarray(crop, np.int16) + rng.integers(-12, 13, (height, width, 3)), 0, 255)
        name = f"{index:05d}.jpg"
        Image.fromarray(noisy.astype(np.uint8)).save(folder / name, quality=90)
        items.append((name, index % 10))
    return Split("train", folder, items, str(folder))


def images_per_second(dataset, batch_size: int, workers: int) -> float:
    """Rate of the second of two epochs (the first starts the workers and warms the caches)."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(0),
                        num_workers=workers, persistent_workers=workers > 0,
                        worker_init_fn=seed_worker if workers > 0 else None)
    for _ in loader:
        pass
    count, started = 0, time.perf_counter()
    for images, _ in loader:
        count += len(images)
    return count / (time.perf_counter() - started)


def benchmark(split: Split, recipe: Recipe, workers: int, cache_dir: Path) -> dict:
    uncached = images_per_second(split_dataset(split, "train", recipe), recipe.batch_size, workers)
    started = time.perf_counter()
    resized = resized_images(split, recipe.resize_size, cache_dir, "benchmark", progress=False)
    build_s = time.perf_counter() - started
    cached = images_per_second(split_dataset(split, "train", recipe, {split.name: resized}), recipe.batch_size, workers)
    return {"images": len(split), "resize_size": recipe.resize_size, "img_size": recipe.img_size,
            "batch_size": recipe.batch_size, "workers": workers, "uncached_images_per_s": uncached,
            "cache_build_s": build_s, "cache_build_images_per_s": len(split) / build_s,
            "cached_images_per_s": cached, "speedup": cached / uncached}


def source_split(args, scratch: Path) -> tuple[Split, str]:
    if not args.datasets:
        width, height = parse_size(args.bench_size)
        split = generate_jpegs(scratch / "images", args.bench_images, (width, height))
        return split, f"{len(split)} generated {width}x{height} JPEGs"
    from bench.commands.common import data_options
    from bench.data import expand_datasets, get_card, materialize, open_dataset

    name = expand_datasets(args.datasets)[0]
    card = get_card(name)
    materialize(card, args.data_root)
    train = open_dataset(card, args.data_root, data_options(args).get(card.name)).train
    split = replace(train, items=train.items[: args.bench_images], parent=None, indices=None)
    return split, f"the first {len(split)} train images of {name} ({split.root})"


def run_benchmark(args) -> int:
    if args.bench_images < args.batch_size * 2:
        raise UsageError(f"--bench-images {args.bench_images} is too few for two batches of {args.batch_size}")
    workers = args.workers if args.workers is not None else min(8, os.cpu_count() or 1)
    if workers < 0:
        raise UsageError(f"--workers must be >= 0, got {workers}")
    recipe = Recipe(img_size=args.img_size, resize_size=args.resize_size, batch_size=args.batch_size)
    with tempfile.TemporaryDirectory(prefix="fgbench-pipebench-") as scratch:
        split, what = source_split(args, Path(scratch))
        cache_dir = Path(args.cache_dir) if args.cache_dir else Path(scratch) / "cache"
        result = benchmark(split, recipe, workers, cache_dir)
    result["source"] = what
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"input pipeline on {what}: Resize({recipe.resize_size}) -> RandomCrop({recipe.img_size}) -> flip -> "
          f"tensor, batch {recipe.batch_size}, {workers} workers (second epoch timed)")
    print(f"  decode + resize every time: {result['uncached_images_per_s']:10.1f} images/s")
    print(f"  decode-and-resize cache:    {result['cached_images_per_s']:10.1f} images/s "
          f"({result['speedup']:.1f}x)")
    print(f"  cache build (once):         {result['cache_build_images_per_s']:10.1f} images/s "
          f"({result['cache_build_s']:.1f} s)")
    return 0
