"""Tiny datasets in every on-disk layout fgbench reads, written at test time (nothing committed).

Each image is a few pixels whose colour encodes (class, index), so a test can check that the
reader paired the right file with the right label by looking at the decoded pixels.
"""

from __future__ import annotations

import functools
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


def _save(path: Path, label: int, index: int) -> None:
    """PNG bytes whatever the extension: a lossy JPEG would blur the colour that encodes the label."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image(label, index).save(path, format="PNG")


def write_dogs(root: Path, num_classes: int = 120, per_class: dict[str, int] | None = None, *,
               base: int = 1, with_file_list: bool = True) -> Path:
    """Stanford Dogs: Images/<wnid-breed>/<wnid>_<n>.jpg (PNG bytes), Annotation/, {train,test}_list.mat.

    The lists are MATLAB N x 1 cell columns and an N x 1 double label column, as lists.tar ships
    them (written with scipy.io.savemat); labels numbered from `base`.
    """
    from scipy.io import savemat

    per_class = per_class or {"train": 1, "test": 1}
    for split, rows in plan(num_classes, per_class).items():
        files, annos, labels = [], [], []
        for name, label, index in rows:
            breed = f"n{2085620 + label:08d}-Breed_{label}"
            stem = f"{breed}/n{2085620 + label:08d}_{index}"
            _save(root / "Images" / f"{stem}.jpg", label, index)
            annotation = root / "Annotation" / stem
            annotation.parent.mkdir(parents=True, exist_ok=True)
            annotation.write_text("<annotation><object><bndbox><xmin>0</xmin></bndbox></object></annotation>")
            files.append(f"{stem}.jpg")
            annos.append(stem)
            labels.append(float(label + base))
        cells = {"annotation_list": np.array(annos, dtype=object).reshape(-1, 1),
                 "labels": np.array(labels).reshape(-1, 1)}
        if with_file_list:
            cells["file_list"] = np.array(files, dtype=object).reshape(-1, 1)
        savemat(root / f"{split}_list.mat", cells)
    return root


CARS_FIELDS = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")


def cars_annotations(rows: list[tuple[str, int]], base: int = 1, with_class: bool = True) -> np.ndarray:
    """A 1 x N MATLAB struct array `annotations` like the devkit's (class ids from `base`)."""
    fields = [f for f in CARS_FIELDS if with_class or f != "class"]
    records = np.zeros((1, len(rows)), dtype=[(f, object) for f in fields])
    for i, (fname, label) in enumerate(rows):
        values = {"bbox_x1": 1, "bbox_y1": 2, "bbox_x2": 10, "bbox_y2": 9, "class": label + base, "fname": fname}
        records[0, i] = tuple(np.array([[values[f]]], dtype=np.uint16) if f != "fname" else values[f] for f in fields)
    return records


def write_cars(root: Path, num_classes: int = 196, per_class: dict[str, int] | None = None, *,
               test_mat_in_devkit: bool = False, nested_images: bool = False, with_meta: bool = True) -> Path:
    """Stanford Cars devkit layout: devkit/cars_{train_annos,meta}.mat, cars_test_annos_withlabels.mat
    (at the root, or in devkit/), cars_train/ and cars_test/ (or Kaggle's cars_train/cars_train/)."""
    from scipy.io import savemat

    (root / "devkit").mkdir(parents=True, exist_ok=True)
    counter = 0
    for split, rows in plan(num_classes, per_class or {"train": 1, "test": 1}).items():
        entries = []
        for _, label, index in rows:
            counter += 1
            fname = f"{counter:05d}.jpg"
            folder = root / f"cars_{split}" / (f"cars_{split}" if nested_images else "")
            _save(folder / fname, label, index)
            entries.append((fname, label))
        annotations = cars_annotations(entries)
        if split == "train":
            savemat(root / "devkit" / "cars_train_annos.mat", {"annotations": annotations})
        else:
            savemat(root / ("devkit" if test_mat_in_devkit else "") / "cars_test_annos_withlabels.mat",
                    {"annotations": annotations})
            savemat(root / "devkit" / "cars_test_annos.mat",
                    {"annotations": cars_annotations(entries, with_class=False)})
    if with_meta:
        names = np.array([f"Make Model {c} 2012" for c in range(num_classes)], dtype=object).reshape(1, -1)
        savemat(root / "devkit" / "cars_meta.mat", {"class_names": names})
    return root


NABIRDS_INNER = (0, 1, 2, 3)  # taxonomy nodes above the leaves


def nabirds_class_ids(num_classes: int) -> list[int]:
    """Sparse leaf ids like the real file's (295..1010 with gaps), deliberately not in sorted file order."""
    return [295 + 2 * c + (c // 7) for c in range(num_classes)]


def write_nabirds(root: Path, num_classes: int = 555, per_class: dict[str, int] | None = None, *,
                  shuffle: bool = True) -> Path:
    """NABirds: UUID image ids, sparse leaf class ids, classes.txt of every taxonomy node, hierarchy.txt."""
    import uuid

    leaves = nabirds_class_ids(num_classes)
    rows = []
    for split, entries in plan(num_classes, per_class or {"train": 1, "test": 1}).items():
        for _, label, index in entries:
            image_id = str(uuid.UUID(int=index * 7919 + 1))
            rel = f"{leaves[label]:04d}/{image_id.replace('-', '')}.jpg"
            _save(root / "images" / rel, label, index)
            rows.append((image_id, rel, leaves[label], split))
    rng = random.Random(1)

    def write(name: str, lines: list[str]) -> None:
        if shuffle:
            rng.shuffle(lines)
        (root / name).write_text("\n".join(lines) + "\n")

    write("images.txt", [f"{i} {rel}" for i, rel, _, _ in rows])
    write("image_class_labels.txt", [f"{i} {c}" for i, _, c, _ in rows])
    write("train_test_split.txt", [f"{i} {1 if s == 'train' else 0}" for i, _, _, s in rows])
    nodes = [*NABIRDS_INNER, *leaves]
    (root / "classes.txt").write_text("".join(f"{c} Bird class {c}\n" for c in nodes))
    links = [f"{c} {0 if c in NABIRDS_INNER else NABIRDS_INNER[1 + c % 3]}" for c in nodes if c != 0]
    (root / "hierarchy.txt").write_text("\n".join(links) + "\n")
    return root


@functools.lru_cache(maxsize=None)
def _label_png(label: int) -> bytes:
    return encoded(label, 0)


def write_inat(root: Path, num_classes: int = 5089, per_class: dict[str, int] | None = None, *,
               test_classes: int | None = None, train_classes: int | None = None) -> Path:
    """iNaturalist 2017: train2017.json / val2017.json (COCO style) and nested
    train_val_images/<supercategory>/<species>/<hash>.jpg; category ids 0-based.

    `test_classes` / `train_classes` give images to the first classes only (every category is
    still listed): thousands of classes cost seconds of PNG writing, which parser tests skip.
    """
    import json

    supers = ("Plantae", "Insecta", "Aves", "Reptilia")
    categories = [{"id": c, "name": f"Species {c}", "supercategory": supers[c % len(supers)]}
                  for c in range(num_classes)]
    image_id = 0
    for split, rows in plan(num_classes, per_class or {"train": 1, "test": 1}).items():
        images, annotations = [], []
        limit = test_classes if split == "test" else train_classes
        for _, label, index in rows:
            if limit is not None and label >= limit:
                continue
            image_id += 1
            rel = f"train_val_images/{supers[label % len(supers)]}/Species_{label}/{image_id:07x}.jpg"
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(_label_png(label % 256))  # the colour encodes the label; 256 encodings serve 5089 classes
            images.append({"id": image_id, "file_name": rel, "width": SIZE[0], "height": SIZE[1]})
            annotations.append({"id": image_id + 10**6, "image_id": image_id, "category_id": label})
        annotations.reverse()  # joined on image_id, not zipped by position as the originals do
        name = "train2017.json" if split == "train" else "val2017.json"
        (root / name).write_text(json.dumps({"images": images, "annotations": annotations,
                                             "categories": categories}))
    return root
