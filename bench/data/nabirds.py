"""Reader for NABirds (Van Horn et al., 2015) as its archive unpacks.

    nabirds/
      images.txt              "<image_id> <relative/path.jpg>"   (ids are UUIDs; paths relative to images/)
      image_class_labels.txt  "<image_id> <class_id>"            (sparse class ids, e.g. 295..1010)
      train_test_split.txt    "<image_id> <is_training_image>"   (1 train, 0 test)
      classes.txt             "<class_id> <class name>"          (all 1011 nodes of the taxonomy; optional)
      hierarchy.txt           "<child_id> <parent_id>"           (optional)
      images/<NNNN>/<file>.jpg

Images are labelled with the 555 leaves of a 1011-node taxonomy, numbered sparsely. The
originals (TransFG, RAMS-Trans `NABirds`) enumerate a Python `set` of the ids used by
image_class_labels.txt, which CPython happens to iterate in ascending order for these small ints.
Here the order is stated rather than inherited: **class k is the k-th smallest class id that
labels an image** (either split), so 0..554 matches the originals' labels. A labelled id that is
an inner node of hierarchy.txt, or a count other than the card's, is refused. Items keep
images.txt's line order (the originals' merge keeps it too), joined on the image id.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from bench.data.cards import DatasetCard
from bench.data.cub import read_index, read_joined, split_by_flag
from bench.data.items import DatasetSplits, Split
from bench.data.labels import parse_int
from bench.data.readers import register_reader
from bench.errors import DatasetError

LAYOUT = "images.txt, image_class_labels.txt, train_test_split.txt (classes.txt, hierarchy.txt) and images/"


def looks_like_nabirds(path: Path) -> bool:
    # the same marker files as CUB: a card names its format, so the two are never confused
    return (path / "images.txt").is_file() and (path / "images").is_dir()


def leaf_classes(root: Path, raw: dict[str, int], where: dict[str, str], num_classes: int) -> list[int]:
    """The class ids used by images, ascending: position k is class k."""
    used = sorted(set(raw.values()))
    hierarchy = root / "hierarchy.txt"
    if hierarchy.is_file():
        links, link_where = read_index(hierarchy)
        parents = {parse_int(parent, link_where[child]) for child, parent in links.items()}
        inner = next((key for key, value in raw.items() if value in parents), None)
        if inner is not None:
            raise DatasetError(f"{where[inner]}: class id {raw[inner]} is an inner node of {hierarchy} (a parent of "
                               "other classes); images must be labelled with leaf classes")
    if len(used) != num_classes:
        raise DatasetError(f"{root / 'image_class_labels.txt'} labels images with {len(used)} distinct class ids but "
                           f"the card says {num_classes} leaf classes (wrong class count)")
    return used


def class_names(root: Path, leaves: list[int]) -> list[str] | None:
    path = root / "classes.txt"
    if not path.is_file():
        return None
    names, where = read_index(path)
    by_id = {parse_int(key, where[key]): name for key, name in names.items()}
    absent = [str(c) for c in leaves if c not in by_id]
    if absent:
        raise DatasetError(f"{path} has no name for class id(s) {', '.join(absent[:5])}"
                           f"{' ...' if len(absent) > 5 else ''} ({len(absent)} in all)")
    return [by_id[c] for c in leaves]


@register_reader("nabirds", title="NABirds", looks_like=looks_like_nabirds, layout=LAYOUT)
def read_nabirds(card: DatasetCard, root: Path, options: Mapping[str, Any]) -> DatasetSplits:
    joined = read_joined(root, "NABirds")
    raw = {key: parse_int(joined.labels[key], joined.label_where[key]) for key in joined.ids}
    leaves = leaf_classes(root, raw, joined.label_where, card.num_classes)
    index = {class_id: k for k, class_id in enumerate(leaves)}
    labels = [index[raw[key]] for key in joined.ids]
    out = DatasetSplits(name=card.name, root=root, num_classes=card.num_classes, format="nabirds",
                        class_names=class_names(root, leaves))
    for split, items in split_by_flag(root, joined, joined.ids, labels).items():
        out.splits[split] = Split(split, root / "images", items, str(root / "train_test_split.txt"))
    return out
