"""Reader for the UFG layout (Cotton80, SoyLocal, SoyGene, SoyAgeing, SoyGlobal; the demo).

    <root>/anno/train.txt   "<relative/path.ext> <label>" per line, labels 1-based
    <root>/anno/test.txt
    <root>/anno/val.txt     optional
    <root>/images/<relative/path.ext>

Parsing is a superset of the originals' `line.strip().split(' ')`: CRLF and blank lines are
tolerated, and the label is the last whitespace-separated field so paths may contain spaces.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from bench.data.cards import DatasetCard
from bench.data.items import DatasetSplits, Split
from bench.data.roots import find_root
from bench.errors import DatasetError

LAYOUT = "anno/train.txt, anno/test.txt and images/"


def looks_like_ufg(path: Path) -> bool:
    return (path / "anno").is_dir() and (path / "images").is_dir()


def parse_anno(path: Path, num_classes: int, label_offset: int = 1) -> list[tuple[str, int]]:
    """Parse one anno file into (relative path, 0-based label) pairs, refusing what looks wrong."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DatasetError(f"{path} is not UTF-8 text; expected '<relative/path> <label>' lines") from None
    items: list[tuple[str, int]] = []
    lines: list[int] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2:
            raise DatasetError(f"{path}:{lineno}: expected '<relative/path> <label>', got {line!r}")
        rel, token = parts
        try:
            raw = int(token)
        except ValueError:
            raise DatasetError(f"{path}:{lineno}: label {token!r} is not an integer") from None
        items.append((rel, raw - label_offset))
        lines.append(lineno)
    if not items:
        raise DatasetError(f"{path} lists no images (empty split); expected '<relative/path> <label>' lines")
    first = label_offset
    for (rel, label), lineno in zip(items, lines):
        if not 0 <= label < num_classes:
            hint = ""
            if label == -1 and label_offset == 1:
                hint = " (the file looks 0-based; UFG files are 1-based: set label_offset=0 if it really is)"
            raise DatasetError(
                f"{path}:{lineno}: label {label + label_offset} is out of range "
                f"{first}..{num_classes - 1 + first} for {num_classes} classes{hint}"
            )
    return items


def open_ufg(card: DatasetCard, data_root: Path, options: Mapping[str, Any] | None = None) -> DatasetSplits:
    options = {**card.reader, **(options or {})}
    root = Path(options["path"]) if options.get("path") else find_root(card, data_root, looks_like_ufg, LAYOUT)
    if not looks_like_ufg(root):
        raise DatasetError(f"{root} is not a UFG dataset folder; expected {LAYOUT}")
    label_offset = int(options.get("label_offset", 1))
    out = DatasetSplits(name=card.name, root=root, num_classes=card.num_classes)
    for split in ("train", "val", "test"):
        anno = root / "anno" / f"{split}.txt"
        if not anno.is_file():
            if split == "val":
                continue
            raise DatasetError(f"{card.name}: missing {anno}; expected {LAYOUT}")
        out.splits[split] = Split(split, root / "images", parse_anno(anno, card.num_classes, label_offset), str(anno))
    return out
