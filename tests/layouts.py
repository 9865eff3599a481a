"""Tiny datasets in every on-disk layout fgbench reads, written at test time (nothing committed).

Each image is a few pixels whose colour encodes (class, index), so a test can check that the
reader paired the right file with the right label by looking at the decoded pixels.
"""

from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = (12, 10)  # width, height: not square, so a transposed read would show


def colour(label: int, index: int) -> tuple[int, int, int]:
    return (label * 3 % 256, index * 7 % 256, 200)


def image(label: int, index: int, mode: str = "RGB") -> Image.Image:
    img = Image.new("RGB", SIZE, colour(label, index))
    return img if mode == "RGB" else img.convert(mode)


def encoded(label: int, index: int, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image(label, index).save(buffer, fmt)
    return buffer.getvalue()


def plan(num_classes: int, per_class: dict[str, int]) -> dict[str, list[tuple[str, int, int]]]:
    """split -> [(file name, 0-based label, index)]; index runs over the whole dataset."""
    out, index = {}, 0
    for split, count in per_class.items():
        rows = []
        for label in range(num_classes):
            for k in range(count):
                rows.append((f"c{label:03d}/{split}_{k}.png", label, index))
                index += 1
        out[split] = rows
    return out


def write_ufg(root: Path, num_classes: int, per_class: dict[str, int] | None = None, *, base: int = 1,
              crlf: bool = False, blank_lines: bool = False, spaces: bool = False) -> Path:
    """`root/anno/{split}.txt` + `root/images/...` with labels numbered from `base`."""
    per_class = per_class or {"train": 1, "test": 1}
    (root / "anno").mkdir(parents=True, exist_ok=True)
    newline = "\r\n" if crlf else "\n"
    for split, rows in plan(num_classes, per_class).items():
        lines = []
        for name, label, index in rows:
            if spaces:
                name = name.replace("_", " with space ")
            path = root / "images" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            image(label, index).save(path)
            lines.append(f"{name} {label + base}")
            if blank_lines:
                lines.append("   ")
        (root / "anno" / f"{split}.txt").write_bytes((newline.join(lines) + newline).encode())
    return root


def write_cub(root: Path, num_classes: int, per_class: dict[str, int] | None = None, *, shuffle: bool = True,
              with_classes: bool = True) -> Path:
    """The CUB_200_2011 layout; the three index files are written in *different* line orders."""
    per_class = per_class or {"train": 1, "test": 1}
    rows = []
    for split, entries in plan(num_classes, per_class).items():
        rows += [(index + 1, f"{label + 1:03d}.Class_{label}/{Path(name).name}", label, split, index)
                 for name, label, index in entries]
    for image_id, rel, label, _, index in rows:
        path = root / "images" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        image(label, index).save(path)
    rng = random.Random(0)

    def write(name: str, lines: list[str]) -> None:
        if shuffle:
            rng.shuffle(lines)
        (root / name).write_text("\n".join(lines) + "\n")

    write("images.txt", [f"{i} {rel}" for i, rel, _, _, _ in rows])
    write("image_class_labels.txt", [f"{i} {label + 1}" for i, _, label, _, _ in rows])
    write("train_test_split.txt", [f"{i} {1 if split == 'train' else 0}" for i, _, _, split, _ in rows])
    if with_classes:
        (root / "classes.txt").write_text("".join(f"{c + 1} {c + 1:03d}.Class_{c}\n" for c in range(num_classes)))
    return root


def write_imagefolder(root: Path, num_classes: int, splits: dict[str, int] | None = None) -> Path:
    """`root/<split>/<class>/<file>` (class folder names sort in label order)."""
    for split, rows in plan(num_classes, splits or {"train": 1, "val": 1}).items():
        for name, label, index in rows:
            path = root / split / f"class_{label:03d}" / Path(name).name
            path.parent.mkdir(parents=True, exist_ok=True)
            image(label, index).save(path)
    return root


def hf_rows(num_classes: int, per_class: dict[str, int]) -> dict[str, list[tuple[bytes, int, int]]]:
    return {split: [(encoded(label, index), label, index) for _, label, index in rows]
            for split, rows in plan(num_classes, per_class).items()}


def write_hf_disk(root: Path, num_classes: int, per_class: dict[str, int] | None = None) -> Path:
    """`DatasetDict.save_to_disk` with an `Image` column and a `ClassLabel` label (names sort as indices)."""
    import datasets

    features = datasets.Features({"image": datasets.Image(),
                                  "label": datasets.ClassLabel(names=[f"class_{c:03d}" for c in range(num_classes)])})
    parts = {}
    for split, rows in hf_rows(num_classes, per_class or {"train": 1, "test": 1}).items():
        parts["validation" if split == "val" else split] = datasets.Dataset.from_dict(
            {"image": [{"bytes": b, "path": None} for b, _, _ in rows], "label": [label for _, label, _ in rows]},
            features=features)
    datasets.disable_progress_bars()
    datasets.DatasetDict(parts).save_to_disk(str(root))
    return root


def write_parquet(path: Path, num_classes: int, per_class: dict[str, int] | None = None, *,
                  string_labels: bool = False, split_column: str | None = "split", base: int = 0) -> Path:
    """One parquet file holding every split (hibana2077's layout): raw image bytes, label, split."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    images, labels, splits = [], [], []
    for split, rows in hf_rows(num_classes, per_class or {"train": 1, "test": 1}).items():
        for data, label, _ in rows:
            images.append(data)
            labels.append(f"name_{label:03d}" if string_labels else label + base)
            splits.append(split)
    columns = {"image": images, "label": labels}
    if split_column:
        columns[split_column] = splits
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)
    return path


def pixel(img) -> tuple[int, int, int]:
    """The colour of a decoded fixture image (PIL or HWC array)."""
    arr = np.asarray(img)
    return tuple(int(v) for v in arr[0, 0, :3])
