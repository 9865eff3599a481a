"""Reader for the UFG layout (Cotton80, SoyLocal, SoyGene, SoyAgeing, SoyGlobal; the demo).

    <root>/anno/train.txt   "<relative/path.ext> <label>" per line, labels 1-based
    <root>/anno/test.txt
    <root>/anno/val.txt     optional (hibana2077's Cotton80 zip ships one; the originals never read it)
    <root>/images/<relative/path.ext>

Parsing is a superset of the originals' `line.strip().split(' ')`: CRLF and blank lines are
tolerated, and the label is the last whitespace-separated field so paths may contain spaces.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from bench.data.cards import DatasetCard
from bench.data.indexfile import two_column_lines
from bench.data.items import DatasetSplits, Split
from bench.data.labels import parse_int, zero_based
from bench.data.readers import register_reader
from bench.errors import DatasetError

LAYOUT = "anno/train.txt, anno/test.txt (optional anno/val.txt) and images/"
SPLITS = ("train", "val", "test")


def looks_like_ufg(path: Path) -> bool:
    return (path / "anno").is_dir() and (path / "images").is_dir()


def parse_anno(path: Path, num_classes: int, label_offset: int = 1, dataset: str = "") -> list[tuple[str, int]]:
    """Parse one anno file into (relative path, 0-based label) pairs, refusing what looks wrong."""
    paths: list[str] = []
    raw: list[int] = []
    where: list[str] = []
    for lineno, relpath, label in two_column_lines(path, "'<relative/path> <label>'", split_at_last=True):
        place = f"{path}:{lineno}"
        paths.append(relpath)
        raw.append(parse_int(label, place))
        where.append(place)
    if not paths:
        raise DatasetError(f"{path} lists no images (empty split); expected '<relative/path> <label>' lines")
    return list(zip(paths, zero_based(raw, where, num_classes, label_offset, dataset or path.parent.parent.name)))


@register_reader(
    "ufg", title="UFG", looks_like=looks_like_ufg, layout=LAYOUT, options={"label_offset": 1}
)
def read_ufg(card: DatasetCard, root: Path, options: Mapping[str, Any]) -> DatasetSplits:
    out = DatasetSplits(name=card.name, root=root, num_classes=card.num_classes, format="ufg")
    for split in SPLITS:
        anno = root / "anno" / f"{split}.txt"
        if not anno.is_file():
            if split == "val":
                continue
            raise DatasetError(f"missing {anno}; expected {LAYOUT}")
        items = parse_anno(anno, card.num_classes, int(options["label_offset"]), card.name)
        out.splits[split] = Split(split, root / "images", items, str(anno))
    return out
