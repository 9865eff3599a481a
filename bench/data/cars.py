"""Reader for Stanford Cars in the devkit layout (as torchvision's `StanfordCars` and the originals read it).

    <root>/devkit/cars_train_annos.mat           struct array `annotations`: bbox_x1..y2, class (1-based), fname
    <root>/devkit/cars_meta.mat                  `class_names`, 196 names in class-id order (optional here)
    <root>/cars_test_annos_withlabels.mat        the labelled test structs, shipped apart from the devkit;
                                                 at the root (TransFG, FFVT, torchvision) or in devkit/ (RAMS-Trans)
    <root>/cars_train/<fname>, <root>/cars_test/<fname>    (Kaggle's copy nests them: cars_train/cars_train/)

Labels are `class - 1`, read by field name (the originals take the second-to-last field by
position). The devkit's own `cars_test_annos.mat` has no labels, so finding only that file is an
error naming the labelled one. The ImageFolder re-packaging (`train/<class name>/`, `test/...`,
e.g. Kaggle's `car_data/car_data/`) is read by the `imagefolder` reader: its class indices are the
sorted folder names, not the devkit's class ids (accuracy is the same; per-class ids differ).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from bench.data.cards import DatasetCard
from bench.data.items import DatasetSplits, Split
from bench.data.labels import zero_based
from bench.data.matfile import integers, load_mat, strings, struct_field, variable
from bench.data.readers import register_reader
from bench.errors import DatasetError

TRAIN_ANNOS = "devkit/cars_train_annos.mat"
TEST_ANNOS = ("cars_test_annos_withlabels.mat", "devkit/cars_test_annos_withlabels.mat")
META = "devkit/cars_meta.mat"
LAYOUT = "devkit/cars_train_annos.mat, cars_test_annos_withlabels.mat, cars_train/ and cars_test/"
WHAT = "a Stanford Cars annotation file with an 'annotations' struct array (fields class and fname)"


def looks_like_cars(path: Path) -> bool:
    return (path / TRAIN_ANNOS).is_file()


def test_annotations(root: Path) -> Path:
    for rel in TEST_ANNOS:
        if (root / rel).is_file():
            return root / rel
    unlabelled = ""
    if (root / "devkit" / "cars_test_annos.mat").is_file():
        unlabelled = " (devkit/cars_test_annos.mat has no labels)"
    raise DatasetError(f"missing {root / TEST_ANNOS[0]}{unlabelled}; the labelled test annotations "
                       f"cars_test_annos_withlabels.mat ship apart from the devkit: put the file in {root} "
                       f"or {root / 'devkit'}")


def read_annotations(path: Path) -> tuple[list[str], list[int]]:
    mat = load_mat(path, WHAT)
    records = variable(mat, "annotations", path)
    if records.dtype.names is None:
        raise DatasetError(f"{path}: 'annotations' is not a struct array; expected {WHAT}")
    names = strings(struct_field(records, "fname", path, "annotations"), f"{path}:annotations.fname")
    labels = integers(struct_field(records, "class", path, "annotations"), f"{path}:annotations.class")
    if not names:
        raise DatasetError(f"{path} lists no images (empty split)")
    return names, labels


def image_folder(root: Path, name: str, first: str) -> Path:
    """`root/name`, or `root/name/name` when the images sit one folder deeper (Kaggle's copy)."""
    folder = root / name
    nested = folder / name
    if not (folder / first).is_file() and (nested / first).is_file():
        return nested
    return folder


def class_names(root: Path, num_classes: int) -> list[str] | None:
    path = root / META
    if not path.is_file():
        return None
    names = strings(variable(load_mat(path, "the devkit's class names"), "class_names", path), f"{path}:class_names")
    if len(names) != num_classes:
        raise DatasetError(f"{path} lists {len(names)} class names but the card says {num_classes} (wrong class count)")
    return names


@register_reader("cars", title="Stanford Cars (devkit)", looks_like=looks_like_cars, layout=LAYOUT,
                 options={"label_offset": 1})
def read_cars(card: DatasetCard, root: Path, options: Mapping[str, Any]) -> DatasetSplits:
    out = DatasetSplits(name=card.name, root=root, num_classes=card.num_classes, format="cars",
                        class_names=class_names(root, card.num_classes))
    for split, path in (("train", root / TRAIN_ANNOS), ("test", test_annotations(root))):
        names, raw = read_annotations(path)
        where = [f"{path}:annotations[{i}].class" for i in range(len(raw))]
        labels = zero_based(raw, where, card.num_classes, int(options["label_offset"]), card.name)
        folder = image_folder(root, f"cars_{split}", names[0])
        out.splits[split] = Split(split, folder, list(zip(names, labels)), str(path))
    return out

