"""Reader for Stanford Dogs as its three archives (images.tar, annotation.tar, lists.tar) unpack.

    <root>/Images/<wnid-breed>/<wnid_number>.jpg     e.g. n02085620-Chihuahua/n02085620_5927.jpg
    <root>/Annotation/<wnid-breed>/<wnid_number>     bounding-box XML (not read: whole images, as the originals)
    <root>/train_list.mat, test_list.mat             file_list, annotation_list, labels (1-based), N x 1 each

The originals (FFVT, TransFG, RAMS-Trans `dogs`, `cropped=False`) take `annotation_list` + `.jpg`
and `labels - 1` from the two lists, in the lists' order; so does this reader (`file_list` when
the file has it, the same names with the extension). A label whose images sit in more than one
breed folder means the list is damaged, and is refused. Class names are the breed folders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from bench.data.cards import DatasetCard
from bench.data.items import DatasetSplits, Split
from bench.data.labels import zero_based
from bench.data.matfile import integers, load_mat, strings, variable
from bench.data.readers import register_reader
from bench.errors import DatasetError

LISTS = {"train": "train_list.mat", "test": "test_list.mat"}
LAYOUT = "Images/<breed>/, train_list.mat and test_list.mat (from lists.tar)"


def looks_like_dogs(path: Path) -> bool:
    return (path / "train_list.mat").is_file() and (path / "Images").is_dir()


def read_list(path: Path) -> tuple[list[str], list[int]]:
    """(image paths relative to Images/, raw labels) of one split list."""
    mat = load_mat(path, "a Stanford Dogs split list (lists.tar) with annotation_list and labels")
    if "file_list" in mat:
        names = strings(mat["file_list"], f"{path}:file_list")
    else:
        names = [f"{name}.jpg" for name in strings(variable(mat, "annotation_list", path), f"{path}:annotation_list")]
    labels = integers(variable(mat, "labels", path), f"{path}:labels")
    if len(names) != len(labels):
        raise DatasetError(f"{path} lists {len(names)} images but {len(labels)} labels; expected one label per image")
    if not names:
        raise DatasetError(f"{path} lists no images (empty split)")
    return names, labels


def breed_names(members: Mapping[str, list[tuple[str, int]]], num_classes: int, source: Path) -> list[str] | None:
    """Class names from the breed folder of each label; a label spread over two folders is a damaged list."""
    folders: dict[int, str] = {}
    for items in members.values():
        for name, label in items:
            folder = name.split("/", 1)[0]
            if folders.setdefault(label, folder) != folder:
                raise DatasetError(f"{source}: label {label + 1} has images in both {folders[label]}/ and {folder}/; "
                                   "each label of train_list.mat and test_list.mat must be one breed folder")
    if len(folders) != num_classes:
        return None
    return [folders[label] for label in range(num_classes)]


@register_reader("dogs", title="Stanford Dogs", looks_like=looks_like_dogs, layout=LAYOUT,
                 options={"label_offset": 1})
def read_dogs(card: DatasetCard, root: Path, options: Mapping[str, Any]) -> DatasetSplits:
    members: dict[str, list[tuple[str, int]]] = {}
    for split, file in LISTS.items():
        path = root / file
        names, raw = read_list(path)
        where = [f"{path}:labels[{i}]" for i in range(len(raw))]
        members[split] = list(zip(names, zero_based(raw, where, card.num_classes, int(options["label_offset"]),
                                                    card.name)))
    out = DatasetSplits(name=card.name, root=root, num_classes=card.num_classes, format="dogs",
                        class_names=breed_names(members, card.num_classes, root))
    for split, items in members.items():
        out.splits[split] = Split(split, root / "Images", items, str(root / LISTS[split]))
    return out
