"""Decoding: every image mode becomes 8-bit RGB; 16-bit pixels are scaled, not clipped."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from bench.data.images import open_rgb, scale_16bit


def saved(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("mode, fmt", [("L", "PNG"), ("P", "PNG"), ("RGBA", "PNG"), ("LA", "PNG"), ("1", "PNG"),
                                       ("CMYK", "JPEG"), ("RGB", "JPEG"), ("L", "JPEG"), ("I;16", "PNG"),
                                       ("RGBA", "WEBP"), ("P", "GIF"), ("I;16", "TIFF")])
def test_every_mode_decodes_to_8bit_rgb(tmp_path, mode, fmt):
    base = Image.new("RGB", (9, 7), (200, 120, 40))
    if mode == "I;16":
        image = Image.fromarray(np.full((7, 9), 40000, np.uint16))
    else:
        image = base.convert(mode)
    path = tmp_path / f"x.{fmt.lower()}"
    path.write_bytes(saved(image, fmt))
    for source in (path, path.read_bytes()):
        out = open_rgb(source)
        assert out.mode == "RGB" and out.size == (9, 7)
        assert np.asarray(out).dtype == np.uint8


def test_16bit_grayscale_is_scaled_not_saturated(tmp_path):
    values = np.array([[0, 1, 128, 257, 1000, 32767], [32768, 40000, 50000, 60000, 65534, 65535]], np.uint16)
    path = tmp_path / "scan.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode == "I;16"
    out = np.asarray(open_rgb(path))
    reference = np.array([[round(float(v) * 255.0 / 65535.0) for v in row] for row in values.tolist()])
    assert np.array_equal(out[..., 0], reference) and np.array_equal(out[..., 1], out[..., 2])
    assert out.max() == 255 and 0 < out[1, 1, 0] < 255  # Image.convert('RGB') would give 255 from 255 up


def test_scale_16bit_endpoints_and_monotone():
    ramp = np.arange(0, 65536, dtype=np.uint16)
    eight = scale_16bit(ramp)
    assert eight[0] == 0 and eight[-1] == 255 and np.all(np.diff(eight.astype(int)) >= 0)
    assert np.array_equal(scale_16bit(np.arange(256, dtype=np.uint16) * 257), np.arange(256))  # 8-bit values survive


def test_truncated_file_raises(tmp_path):
    data = saved(Image.new("RGB", (64, 64), (1, 2, 3)), "JPEG")
    with pytest.raises(OSError):
        open_rgb(data[: len(data) // 2])
