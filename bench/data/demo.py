"""The embedded `demo` dataset, generated on first use in the real UFG layout.

It is fine-grained by construction: every image is a cluttered, varied crop of a real photograph
shipped with scikit-image, and the only class evidence is a small badge (about 4% of the image)
whose inner mark differs between classes by hue (six neighbouring hues, jittered) and by shape
(solid square or ring). The background carries no class information, so a model has to find the
part. Generation is deterministic (fixed seed) and takes a few seconds; nothing is downloaded.
"""

from __future__ import annotations

import colorsys
import os
import shutil
import time
from pathlib import Path

import numpy as np
from PIL import Image

GENERATOR_VERSION = 1
STAMP = ".fgbench-demo"
HUES = ("red", "orange", "green", "cyan", "blue", "magenta")
MARKS = ("solid", "ring")
CLASS_NAMES = tuple(f"{hue}_{mark}" for mark in MARKS for hue in HUES)
PHOTOS = (
    "astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "brick",
    "grass", "gravel", "camera", "coins", "moon", "retina", "colorwheel",
)


def _photos() -> list[np.ndarray]:
    import skimage.data

    out = []
    for name in PHOTOS:
        image = np.asarray(getattr(skimage.data, name)())
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=-1)
        out.append(image[..., :3].astype(np.uint8))
    return out


def render(rng: np.random.Generator, photos: list[np.ndarray], label: int, size: int = 96, badge: int = 20) -> np.ndarray:
    """One image of class `label`: a random photo crop with a jittered badge at a random place."""
    photo = photos[rng.integers(len(photos))]
    side = int(rng.integers(size, min(photo.shape[:2])))
    y0 = rng.integers(0, photo.shape[0] - side + 1)
    x0 = rng.integers(0, photo.shape[1] - side + 1)
    crop = Image.fromarray(photo[y0 : y0 + side, x0 : x0 + side]).resize((size, size), Image.BILINEAR)
    img = np.asarray(crop, dtype=np.float32)
    if rng.random() < 0.5:
        img = img[:, ::-1]
    img = img * rng.uniform(0.6, 1.2) + rng.uniform(-30, 30, 3)

    b = int(badge * rng.uniform(0.9, 1.1))
    margin = 10  # keeps the badge inside any random crop of the tiny preset
    by, bx = rng.integers(margin, size - margin - b, size=2)
    img[by : by + b, bx : bx + b] = rng.uniform(225, 255)
    hue_index, mark = label % len(HUES), label // len(HUES)
    hue = (hue_index + rng.uniform(-0.15, 0.15)) / len(HUES)
    colour = np.array(colorsys.hsv_to_rgb(hue % 1.0, rng.uniform(0.7, 1.0), rng.uniform(0.7, 1.0))) * 255
    q = b // 5
    img[by + q : by + b - q, bx + q : bx + b - q] = colour
    if MARKS[mark] == "ring":
        img[by + 2 * q : by + b - 2 * q, bx + 2 * q : bx + b - 2 * q] = rng.uniform(225, 255)
    img += rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def generate(target: Path, n_train: int = 30, n_test: int = 20, seed: int = 0) -> Path:
    """Write the demo dataset to `target` atomically (build beside it, then rename)."""
    target = Path(target)
    if is_current(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    rng = np.random.default_rng(seed)
    photos = _photos()
    (tmp / "anno").mkdir(parents=True)
    for split, per_class in (("train", n_train), ("test", n_test)):
        lines = []
        for label, name in enumerate(CLASS_NAMES):
            folder = tmp / "images" / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                rel = f"{name}/{split}_{i:03d}.png"
                Image.fromarray(render(rng, photos, label)).save(tmp / "images" / rel, optimize=False)
                lines.append(f"{rel} {label + 1}")  # UFG files are 1-based
        (tmp / "anno" / f"{split}.txt").write_text("\n".join(lines) + "\n")
    (tmp / STAMP).write_text(f"version {GENERATOR_VERSION} seed {seed} train {n_train} test {n_test}\n")
    if is_current(target):  # another process finished first: keep theirs, it may be in use
        shutil.rmtree(tmp, ignore_errors=True)
        return target
    if target.exists():  # stale (older generator or settings)
        shutil.rmtree(target)
    try:
        os.replace(tmp, target)
    except OSError:  # another process won the race; theirs is identical
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def is_current(target: Path) -> bool:
    stamp = Path(target) / STAMP
    return stamp.is_file() and stamp.read_text().startswith(f"version {GENERATOR_VERSION} ")


def ensure(target: Path, wait_s: float = 120.0) -> Path:
    """Generate unless present; safe when several processes call it at once."""
    if not is_current(target):
        generate(target)
    deadline = time.time() + wait_s
    while not is_current(target) and time.time() < deadline:
        time.sleep(0.2)
    return target
