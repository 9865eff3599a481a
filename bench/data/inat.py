"""Reader for iNaturalist 2017 (Van Horn et al., 2018): COCO-style annotations, 5089 species.

    <root>/train2017.json, <root>/val2017.json      {"images": [{"id", "file_name", ...}],
                                                     "annotations": [{"image_id", "category_id", ...}],
                                                     "categories": [{"id", "name", "supercategory"}]}
    <root>/train_val_images/<supercategory>/<species>/<hash>.jpg   (file_name is relative to <root>)

The papers (TransFG, RAMS-Trans; FFVT's loader too) report on the val split, so **val2017.json is
the test split** here and there is no shipped validation split. Labels are `category_id` as
stored (0-based, 0..5088). The originals pair `images[i]` with `annotations[i]` by position; here
each image is joined with its annotation on `image_id`, and an image with none or several is
refused. Items keep the images' order in the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from bench.data.cards import DatasetCard
from bench.data.items import DatasetSplits, Split
from bench.data.labels import zero_based
from bench.data.readers import register_reader
from bench.errors import DatasetError

FILES = {"train": "train2017.json", "test": "val2017.json"}
LAYOUT = "train2017.json, val2017.json (val is the test split) and the images their file_name fields name"


def looks_like_inat(path: Path) -> bool:
    return (path / FILES["train"]).is_file()


def load_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DatasetError(f"missing {path}; expected {LAYOUT}")
    try:
        with path.open(encoding="utf-8") as handle:
            data = json.load(handle)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path} is not valid JSON ({' '.join(str(exc).split())[:80]}); expected COCO-style "
                           "annotations with images, annotations and categories") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "annotations")):
        raise DatasetError(f"{path}: expected a JSON object with 'images' and 'annotations' lists (COCO style)")
    return data


def _field(entry: Any, key: str, kinds: tuple[type, ...], where: str) -> Any:
    value = entry.get(key) if isinstance(entry, dict) else None
    if not isinstance(value, kinds) or isinstance(value, bool):
        kind = " or ".join(k.__name__ for k in kinds)
        raise DatasetError(f"{where}: expected {key!r} ({kind}), got {str(entry)[:120]}")
    return value


def read_split(path: Path) -> tuple[list[str], list[int], list[str], dict[int, str]]:
    """(file names, raw category ids, where each is, category names by id) of one annotation file."""
    data = load_json(path)
    labels: dict[int | str, tuple[int, int]] = {}  # image id -> (category id, annotation index)
    for i, ann in enumerate(data["annotations"]):
        where = f"{path}: annotations[{i}]"
        image_id = _field(ann, "image_id", (int, str), where)
        if image_id in labels:
            raise DatasetError(f"{where}: image {image_id} has a second annotation (first: annotations"
                               f"[{labels[image_id][1]}]); expected one label per image")
        labels[image_id] = (_field(ann, "category_id", (int,), where), i)
    names, raw, where = [], [], []
    for i, img in enumerate(data["images"]):
        image_id = _field(img, "id", (int, str), f"{path}: images[{i}]")
        if image_id not in labels:
            raise DatasetError(f"{path}: images[{i}] (id {image_id}) has no annotation; expected one label per image")
        names.append(_field(img, "file_name", (str,), f"{path}: images[{i}]"))
        raw.append(labels[image_id][0])
        where.append(f"{path}: annotations[{labels[image_id][1]}]")
    if not names:
        raise DatasetError(f"{path} lists no images (empty split)")
    categories = {c["id"]: str(c.get("name", c["id"])) for c in data.get("categories") or []
                  if isinstance(c, dict) and isinstance(c.get("id"), int)}
    return names, raw, where, categories


def class_names(categories: dict[int, str], num_classes: int, offset: int, path: Path) -> list[str] | None:
    if not categories:
        return None
    if len(categories) != num_classes:
        raise DatasetError(f"{path} lists {len(categories)} categories but the card says {num_classes} "
                           "(wrong class count)")
    return [categories.get(k + offset, str(k + offset)) for k in range(num_classes)]


@register_reader("inat", title="iNaturalist 2017", looks_like=looks_like_inat, layout=LAYOUT,
                 options={"label_offset": 0})
def read_inat(card: DatasetCard, root: Path, options: Mapping[str, Any]) -> DatasetSplits:
    offset = int(options["label_offset"])
    out = DatasetSplits(name=card.name, root=root, num_classes=card.num_classes, format="inat")
    for split, file in FILES.items():
        path = root / file
        names, raw, where, categories = read_split(path)
        labels = zero_based(raw, where, card.num_classes, offset, card.name)
        if split == "train":
            out.class_names = class_names(categories, card.num_classes, offset, path)
        out.splits[split] = Split(split, root, list(zip(names, labels)), str(path))
    return out
