"""Decode-and-resize cache: every transform of the originals starts with a deterministic
Resize((R, R)), so its uint8 output can be computed once per (dataset, split, R), stored as one
memory-mapped `.npy`, and fed to the rest of the transform with identical pixels.

The cache key covers the split list and each file's size and modification time (for images held
inside dataset files, those files' sizes and times), so an edited image or list builds a new
cache. Views of a split (the carved train/val parts) read their parent's cache. Files are built
beside their final name and renamed, so a
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

from bench.data.items import Split
from bench.data.transforms import resize_op


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fgbench"


def cache_key(split: Split, resize: int) -> str:
    h = hashlib.sha256(f"{split.content_hash()}|{resize}|v1".encode())
    if not split.has_files:
        h.update(split.fingerprint.encode())
    for rel, _ in split.items if split.has_files else ():
        st = (split.root / rel).stat()
        h.update(f"{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def resized_images(split: Split, resize: int, cache_dir: Path, dataset: str, progress: bool = True) -> np.ndarray:
    """A read-only `[N, R, R, 3]` uint8 array of the split's images after Resize((R, R)).

    `split` must not be a view (pass `split.parent` and index the result with `split.indices`).
    """
    if split.parent is not None:
        raise ValueError(f"cache the parent of split view {split.name!r}, not the view")
    cache_dir = Path(cache_dir)
    path = cache_dir / f"{dataset}-{split.name}-r{resize}-{cache_key(split, resize)}.npy"
    if path.is_file():
        return np.load(path, mmap_mode="r")
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    array = open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(split), resize, resize, 3))
    op = resize_op(resize)

    def fill(index: int) -> None:
        array[index] = np.asarray(op(split.decode(index)))

    try:
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # PIL releases the GIL
            for _ in tqdm(pool.map(fill, range(len(split))), total=len(split), leave=False, disable=not progress,
                          desc=f"  caching {dataset}/{split.name} at {resize}px"):
                pass
        array.flush()
        del array
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return np.load(path, mmap_mode="r")
