"""Reader for Hugging Face `datasets` copies: a `save_to_disk` folder or local parquet files.

    <root>/dataset_dict.json + <root>/<split>/...      DatasetDict.save_to_disk
    <root>/state.json + <root>/*.arrow                 Dataset.save_to_disk (splits from a split column)
    <root>/**/*.parquet                                 parquet files, e.g. a Hub snapshot
                                                        (data/train-00000-of-00002.parquet) or
                                                        hibana2077's cotton80_dataset.parquet

Splits come from the DatasetDict, else from parquet file names (`train`, `test`, `val`,
`validation`, `valid` as a name or a delimited part of one), else from a split column. Columns
are configurable (`image_column`, `label_column`, `split_column`). An image cell may be an
`Image` feature (`{bytes, path}`), raw encoded bytes, or a path. Labels may be a `ClassLabel`,
integers (0-based unless `label_offset` says otherwise) or strings, mapped to indices over the
sorted set of names of *all* splits, so train and test agree. Parquet files are converted once
by `datasets` into its Arrow cache (`HF_DATASETS_CACHE`, or the `cache_dir` option) and read
memory-mapped from there; nothing is ever fetched from the Hub.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

from bench.data.cards import DatasetCard
from bench.data.images import open_rgb
from bench.data.items import DatasetSplits, Split
from bench.data.labels import zero_based
from bench.data.readers import register_reader
from bench.errors import DatasetError

LAYOUT = "a datasets save_to_disk folder (dataset_dict.json or state.json) or *.parquet files"
SPLIT_NAMES = {"train": "train", "training": "train", "test": "test", "testing": "test", "val": "val",
               "valid": "val", "validation": "val", "dev": "val"}
SPLIT_TOKEN = re.compile(r"(?:^|[-_./])(" + "|".join(SPLIT_NAMES) + r")(?=$|[-_./\d])", re.IGNORECASE)
WHOLE = "data"  # the datasets split key for files that hold every split (told apart by a split column)


def parquet_files(root: Path, patterns: str = "") -> list[Path]:
    if patterns:
        files = sorted({p for pattern in patterns.split(",") if pattern.strip() for p in root.glob(pattern.strip())})
    else:
        files = sorted(root.rglob("*.parquet"))
    return [p for p in files if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)]


def looks_like_hf(path: Path) -> bool:
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        return True
    return any(next(path.glob(pattern), None) is not None for pattern in ("*.parquet", "*/*.parquet", "*/*/*.parquet"))


def split_of(path: Path, root: Path) -> str | None:
    """The split a parquet file belongs to by the Hub's naming convention, or None."""
    match = SPLIT_TOKEN.search(path.relative_to(root).as_posix().lower())
    return SPLIT_NAMES[match.group(1).lower()] if match else None


def fingerprint(files: list[Path]) -> str:
    return ";".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)


def load_parts(root: Path, options: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """`{part name: datasets.Dataset}` and a fingerprint of the files they came from."""
    import datasets

    datasets.disable_progress_bars()
    if (root / "dataset_dict.json").is_file() or (root / "state.json").is_file():
        try:
            loaded = datasets.load_from_disk(str(root))
        except Exception as exc:  # a damaged save_to_disk folder is a broken dataset, not a crash
            raise DatasetError(f"{root}: datasets.load_from_disk failed: {type(exc).__name__}: {exc}") from None
        parts = dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {WHOLE: loaded}
        return parts, fingerprint(sorted(p for p in root.rglob("*") if p.is_file()))
    files = parquet_files(root, options["files"])
    if not files:
        raise DatasetError(f"{root}: no parquet files{' match ' + options['files'] if options['files'] else ''}; "
                           f"expected {LAYOUT}")
    by_split: dict[str, list[str]] = {}
    for path in files:
        by_split.setdefault(split_of(path, root) or WHOLE, []).append(str(path))
    if WHOLE in by_split and len(by_split) > 1:
        raise DatasetError(f"{root}: some parquet files are named after a split and others are not "
                           f"({', '.join(Path(p).name for p in by_split[WHOLE][:3])}); pass --data-opt NAME.files=GLOB")
    try:
        loaded = datasets.load_dataset("parquet", data_files=by_split, cache_dir=options["cache_dir"] or None)
    except Exception as exc:  # unreadable or mismatched parquet files
        raise DatasetError(f"{root}: reading the parquet files failed: {type(exc).__name__}: {exc}") from None
    return dict(loaded), fingerprint(files)


def require_column(part, column: str, option: str, where: str, dataset: str) -> None:
    if column not in part.column_names:
        raise DatasetError(f"{where} has no column {column!r} (columns: {', '.join(part.column_names)}); "
                           f"name the right one with --data-opt {dataset}.{option}=COLUMN")


def column_values(part, column: str) -> list:
    return part.data.column(column).to_pylist()


class HFImageOpener:
    """Decodes the image cell of a row key `part:row` (picklable, so loader workers can use it)."""

    def __init__(self, parts: Mapping[str, Any], column: str, root: Path):
        self.parts = dict(parts)
        self.column = column
        self.root = root

    def __call__(self, key: str):
        part, row = key.rsplit(":", 1)
        cell = self.parts[part][int(row)][self.column]
        if isinstance(cell, dict):
            cell = cell.get("bytes") or cell.get("path")
        if isinstance(cell, (bytes, bytearray, memoryview)):
            return open_rgb(bytes(cell))
        if isinstance(cell, str):
            return open_rgb(self.root / cell)
        raise DatasetError(f"row {key}: image cell of type {type(cell).__name__} is neither bytes nor a path")


def label_names(parts: Mapping[str, Any], column: str, raw: Mapping[str, list]) -> list[str] | None:
    """Class names from a ClassLabel feature, or the sorted names of all splits for string labels."""
    from datasets import ClassLabel

    feature = next(iter(parts.values())).features.get(column)
    if isinstance(feature, ClassLabel):
        return list(feature.names)
    values = [v for labels in raw.values() for v in labels]
    if values and all(isinstance(v, str) for v in values):
        return sorted(set(values))
    return None


@register_reader("hf", title="Hugging Face datasets", looks_like=looks_like_hf, layout=LAYOUT, options={
    "image_column": "image", "label_column": "label", "split_column": "split", "label_offset": 0, "files": "",
    "cache_dir": "",
})
def read_hf(card: DatasetCard, root: Path, options: Mapping[str, Any]) -> DatasetSplits:
    from datasets import Image as ImageFeature

    parts, source_print = load_parts(root, options)
    image_col, label_col, split_col = options["image_column"], options["label_column"], options["split_column"]
    for name, part in parts.items():
        where = f"{root} [{name}]"
        require_column(part, image_col, "image_column", where, card.name)
        require_column(part, label_col, "label_column", where, card.name)
        if part._indices is not None:  # a selected/filtered dataset: make rows positional
            part = part.flatten_indices()
        if isinstance(part.features.get(image_col), ImageFeature):
            part = part.cast_column(image_col, ImageFeature(decode=False))  # keep the encoded bytes
        parts[name] = part
    raw = {name: column_values(part, label_col) for name, part in parts.items()}
    for name, labels in raw.items():
        if any(label is None for label in labels):
            raise DatasetError(f"{root} [{name}]: column {label_col!r} has empty labels at row "
                               f"{labels.index(None)}; every image needs a label")
    names = label_names(parts, label_col, raw)
    if names is not None and len(names) != card.num_classes:
        raise DatasetError(f"{root}: column {label_col!r} has {len(names)} classes but the card says "
                           f"{card.num_classes} (wrong class count)")

    members: dict[str, list[tuple[str, Any]]] = {}
    for name, part in parts.items():
        split = SPLIT_NAMES.get(name.lower())
        if split is None:
            if split_col not in part.column_names:
                raise DatasetError(f"{root}: part {name!r} is not a train/test/val split and has no split column "
                                   f"{split_col!r}; set it with --data-opt {card.name}.split_column=COLUMN")
            tags = column_values(part, split_col)
            unknown = sorted({str(t) for t in tags if str(t).lower() not in SPLIT_NAMES})
            if unknown:
                raise DatasetError(f"{root}: split column {split_col!r} has values {unknown}; expected "
                                   f"{', '.join(sorted(set(SPLIT_NAMES)))}")
            for row, (tag, label) in enumerate(zip(tags, raw[name])):
                members.setdefault(SPLIT_NAMES[str(tag).lower()], []).append((f"{name}:{row}", label))
        else:
            members.setdefault(split, []).extend((f"{name}:{row}", label) for row, label in enumerate(raw[name]))

    opener = HFImageOpener({n: p.select_columns([image_col]) for n, p in parts.items()}, image_col, root)
    out = DatasetSplits(name=card.name, root=root, num_classes=card.num_classes, format="hf", class_names=names)
    for split in ("train", "val", "test"):
        rows = members.get(split, [])
        if not rows:
            if split == "val":
                continue
            raise DatasetError(f"{root}: no rows in the {split} split (empty split); found splits "
                               f"{', '.join(sorted(members)) or 'none'}")
        keys = [key for key, _ in rows]
        if names is not None and isinstance(rows[0][1], str):
            index = {n: i for i, n in enumerate(names)}
            labels = [index[label] for _, label in rows]
        else:
            labels = zero_based([int(label) for _, label in rows], [f"{root} [{key}]" for key in keys],
                                card.num_classes, 0 if names is not None else int(options["label_offset"]), card.name)
        out.splits[split] = Split(split, root, list(zip(keys, labels)), f"{root} ({split})", opener=opener,
                                  fingerprint=source_print)
    return out
