"""Decode-and-resize cache: every transform of the originals starts with a deterministic
Resize((R, R)), so its uint8 output can be computed once per (dataset, split, R), stored as one
memory-mapped `.npy`, and fed to the rest of the transform with identical pixels.

The cache key covers the split list and each file's size and modification time, so an edited
image or list builds a new cache. Files are built beside their final name and renamed, so a
killed build leaves nothing half-written behind.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from numpy.lib.format import open_memmap
from tqdm.auto import tqdm

from bench.data.dataset import open_rgb
from bench.data.items import Split
from bench.data.transforms import resize_op


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fgbench"


def cache_key(split: Split, resize: int) -> str:
    h = hashlib.sha256(f"{split.content_hash()}|{resize}|v1".encode())
    for rel, _ in split.items:
        st = (split.root / rel).stat()
        h.update(f"{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def resized_images(split: Split, resize: int, cache_dir: Path, dataset: str, progress: bool = True) -> np.ndarray:
    """A read-only `[N, R, R, 3]` uint8 array of the split's images after Resize((R, R))."""
    cache_dir = Path(cache_dir)
    path = cache_dir / f"{dataset}-{split.name}-r{resize}-{cache_key(split, resize)}.npy"
    if path.is_file():
        return np.load(path, mmap_mode="r")
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    array = open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(split), resize, resize, 3))
    op = resize_op(resize)

    def fill(index: int) -> None:
        array[index] = np.asarray(op(open_rgb(split.root / split.items[index][0])))

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # PIL releases the GIL
        for _ in tqdm(pool.map(fill, range(len(split))), total=len(split), leave=False, disable=not progress,
                      desc=f"  caching {dataset}/{split.name} at {resize}px"):
            pass
    array.flush()
    del array
    os.replace(tmp, path)
    return np.load(path, mmap_mode="r")
