"""Reader for CUB-200-2011 as the official archive unpacks it.

    CUB_200_2011/
      images.txt              "<image_id> <relative/path.jpg>"   (relative to images/)
      image_class_labels.txt  "<image_id> <class_id>"            (class ids 1-based)
      train_test_split.txt    "<image_id> <is_training_image>"   (1 train, 0 test)
      classes.txt             "<class_id> <class_name>"          (optional; names and class count)
      images/<NNN.Class_Name>/<file>.jpg

The originals (FFVT, TransFG, RAMS-Trans) zip the three index files by *line position*, which is
right only while the files stay in the same order. Here they are joined on the image id, every
id must appear in all three, and items are ordered by id.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, NamedTuple

from bench.data.cards import DatasetCard
from bench.data.indexfile import two_column_lines
from bench.data.items import DatasetSplits, Split
from bench.data.labels import parse_int, zero_based
from bench.data.readers import register_reader
from bench.errors import DatasetError

INDEX_FILES = ("images.txt", "image_class_labels.txt", "train_test_split.txt")
LAYOUT = "images.txt, image_class_labels.txt, train_test_split.txt and images/"


def looks_like_cub(path: Path) -> bool:
    return (path / "images.txt").is_file() and (path / "images").is_dir()


def read_index(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """`{image_id: value}` and `{image_id: "file:line"}` from a two-column index file."""
    if not path.is_file():
        raise DatasetError(f"missing {path}; the folder must hold {', '.join(INDEX_FILES)} and images/")
    values: dict[str, str] = {}
    where: dict[str, str] = {}
    for lineno, key, value in two_column_lines(path, "'<image_id> <value>'", split_at_last=False):
        if key in values:
            first = where[key].rsplit(":", 1)[1]
            raise DatasetError(f"{path}:{lineno}: image id {key} appears twice (first at line {first})")
        values[key] = value
        where[key] = f"{path}:{lineno}"
    if not values:
        raise DatasetError(f"{path} is empty; expected '<image_id> <value>' lines")
    return values, where


def _id_order(key: str):
    return (0, int(key), "") if key.isdigit() else (1, 0, key)


def class_names(root: Path, num_classes: int) -> list[str] | None:
    path = root / "classes.txt"
    if not path.is_file():
        return None
    names, _ = read_index(path)
    if len(names) != num_classes:
        raise DatasetError(f"{path} lists {len(names)} classes but the card says {num_classes} (wrong class count)")
    return [names[k] for k in sorted(names, key=_id_order)]


class Joined(NamedTuple):
    """The three index files joined on the image id (each dict keyed by id, ids in images.txt order)."""

    ids: list[str]
    images: dict[str, str]
    labels: dict[str, str]
    label_where: dict[str, str]  # "file:line" of each label
    flags: dict[str, str]
    flag_where: dict[str, str]


def read_joined(root: Path, layout: str) -> Joined:
    """Read and join the index files; every id must appear in all three. `layout` names the
    dataset, for messages."""
    images, _ = read_index(root / "images.txt")
    labels, label_where = read_index(root / "image_class_labels.txt")
    flags, flag_where = read_index(root / "train_test_split.txt")
    for name, other in (("image_class_labels.txt", labels), ("train_test_split.txt", flags)):
        missing = [k for k in images if k not in other]
        extra = [k for k in other if k not in images]
        if missing or extra:
            which, ids = ("has no line for", missing) if missing else ("lists ids absent from images.txt:", extra)
            shown = ", ".join(sorted(ids, key=_id_order)[:5]) + (" ..." if len(ids) > 5 else "")
            raise DatasetError(f"{root / name} {which} image id(s) {shown} ({len(ids)} in all); "
                               f"the {layout} index files must list the same ids")
    return Joined(list(images), images, labels, label_where, flags, flag_where)


def split_by_flag(root: Path, joined: Joined, ids: list[str], labels: list[int]) -> dict[str, list[tuple[str, int]]]:
    """`{"train": [(path, label)], "test": [...]}` of `ids` (with their 0-based `labels`) by
    `is_training_image` (1 train, 0 test); neither may be empty."""
    members: dict[str, list[tuple[str, int]]] = {"train": [], "test": []}
    for key, label in zip(ids, labels):
        flag = joined.flags[key]
        if flag not in ("0", "1"):
            raise DatasetError(f"{joined.flag_where[key]}: is_training_image must be 1 (train) or 0 (test), "
                               f"got {flag!r}")
        members["train" if flag == "1" else "test"].append((joined.images[key], label))
    for split, items in members.items():
        if not items:
            raise DatasetError(f"{root / 'train_test_split.txt'} marks no image as {split} (empty split)")
    return members


@register_reader(
    "cub", title="CUB-200-2011", looks_like=looks_like_cub, layout=LAYOUT, options={"label_offset": 1}
)
def read_cub(card: DatasetCard, root: Path, options: Mapping[str, Any]) -> DatasetSplits:
    joined = read_joined(root, "CUB")
    ids = sorted(joined.ids, key=_id_order)
    raw = [parse_int(joined.labels[k], joined.label_where[k]) for k in ids]
    zero = zero_based(raw, [joined.label_where[k] for k in ids], card.num_classes, int(options["label_offset"]),
                      card.name)
    out = DatasetSplits(name=card.name, root=root, num_classes=card.num_classes, format="cub",
                        class_names=class_names(root, card.num_classes))
    for split, items in split_by_flag(root, joined, ids, zero).items():
        out.splits[split] = Split(split, root / "images", items, str(root / "train_test_split.txt"))
    return out
