"""Decoding any image to 8-bit RGB, the input every pipeline of the originals expects.

`Image.convert("RGB")` is right for 8-bit modes (grayscale, palette, RGBA, CMYK, ...) but clips
16-bit grayscale (`I;16*`) and 32-bit integer (`I`) pixels at 255, turning most of a 16-bit scan
white. Those modes are scaled to 8 bits instead (v * 255 / 65535, rounded); `I` is read as the
16-bit range it holds when Pillow decodes 16-bit files. Alpha is dropped, not composited, as the
originals' `.convert('RGB')` does. EXIF orientation is not applied (neither do the originals).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def scale_16bit(pixels: np.ndarray) -> np.ndarray:
    """uint16-range values -> uint8 by rounding v * 255 / 65535 (0 -> 0, 65535 -> 255)."""
    wide = np.clip(pixels.astype(np.int64), 0, 65535)
    return ((wide * 255 + 32767) // 65535).astype(np.uint8)


def to_rgb(image: Image.Image) -> Image.Image:
    """An 8-bit RGB copy of `image`, whatever its mode."""
    if image.mode in SIXTEEN_BIT_MODES:
        gray = Image.fromarray(scale_16bit(np.asarray(image)))
        return gray.convert("RGB")
    if image.mode == "La":  # premultiplied alpha has no direct route to RGB
        image = image.convert("LA")
    return image.convert("RGB")


def open_rgb(source: str | Path | bytes) -> Image.Image:
    """Decode a file path or encoded bytes as 8-bit RGB (decoding fully, so errors surface here)."""
    handle = io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else source
    with Image.open(handle) as image:
        image.load()
        return to_rgb(image)
