"""The embedded demo dataset: layout, determinism, and that the tiny preset can learn it."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from bench.data import demo, get_card, open_dataset
from bench.data.ufg import parse_anno
from tests.conftest import run_bench


def test_demo_is_in_the_real_ufg_layout_with_one_based_labels(demo_root):
    root = demo_root / "demo"
    card = get_card("demo")
    assert card.num_classes == len(demo.CLASS_NAMES) >= 10
    raw = [int(line.rsplit(maxsplit=1)[1]) for line in (root / "anno" / "train.txt").read_text().splitlines()]
    assert min(raw) == 1 and max(raw) == card.num_classes
    splits = open_dataset(card, demo_root)
    assert (len(splits.train), len(splits.test)) == (card.splits["train"], card.splits["test"])
    assert parse_anno(root / "anno" / "test.txt", card.num_classes) == splits.test.items
    image = Image.open(root / "images" / splits.train.items[0][0])
    assert image.mode == "RGB" and image.size == (96, 96)


def test_demo_generation_is_deterministic(tmp_path, demo_root):
    again = demo.generate(tmp_path / "demo")
    for rel in ("anno/train.txt", "anno/test.txt", "images/red_solid/train_000.png", "images/blue_ring/test_019.png"):
        assert (again / rel).read_bytes() == (demo_root / "demo" / rel).read_bytes(), rel


def test_demo_class_evidence_is_a_small_local_detail(demo_root):
    """Two images of the same class differ almost everywhere (background); the badge is small."""
    root = demo_root / "demo" / "images" / "green_ring"
    a = np.asarray(Image.open(root / "train_000.png"), dtype=float)
    b = np.asarray(Image.open(root / "train_001.png"), dtype=float)
    assert np.mean(np.abs(a - b).max(axis=-1) > 20) > 0.5  # cluttered, varied backgrounds
    badge_area = (20 * 1.1) ** 2 / 96**2
    assert badge_area < 0.06


def test_tiny_preset_learns_the_demo_clearly_above_chance(demo_root, tmp_path):
    proc = run_bench("--methods", "vit", "--datasets", "demo", "--seeds", "0", "--data-root", str(demo_root),
                     "--results-dir", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache"), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    record = json.loads(next((tmp_path / "results").rglob("*.json")).read_text())
    chance = 100.0 / get_card("demo").num_classes
    assert record["accuracy"]["top1_last"] > 2.5 * chance, record["accuracy"]
