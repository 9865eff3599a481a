"""Datasets: cards, readers, checks, transforms and loaders."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from bench.data.cards import DatasetCard, expand_datasets, get_card, load_cards
from bench.data.items import DatasetSplits, Split
from bench.data.readers import all_readers, get_reader, reader_options
from bench.data.roots import find_root, not_found, require_base
from bench.errors import DatasetError

GENERATORS = {"demo": "bench.data.demo"}


def materialize(card: DatasetCard, data_root: Path) -> None:
    """Build generated datasets (the demo) under data_root on first use."""
    if not card.generator:
        return
    import importlib

    module = importlib.import_module(GENERATORS[card.generator])
    module.ensure(Path(data_root) / card.name)


def locate(card: DatasetCard, data_root: Path, options: Mapping[str, Any]):
    """(reader, dataset folder, notes, implied reader options): the card's format first, the other formats
    only when none was named and the card's is not found.

    A `path` option (`--data-path`) may be the dataset folder, its parent, or a parquet file.
    """
    explicit = options.get("format")
    reader = get_reader(explicit or card.format)
    path = options.get("path")
    base, flag = (Path(path), "--data-path") if path else (Path(data_root), "--data-root")
    notes: list[str] = []
    if path and base.is_file() and base.suffix == ".parquet":  # one parquet file holding every split
        return get_reader("hf"), base.parent, [f"reading {base.name} as parquet"], {"files": base.name}
    require_base(card, base, flag, reader.layout)
    root = find_root(card, base, reader.looks_like, explicit=bool(path))
    if root is None and not explicit:
        for other in all_readers():
            if other.format != reader.format:
                root = find_root(card, base, other.looks_like, explicit=bool(path))
                if root is not None:
                    notes.append(f"no {reader.format} layout found, so {root} is read as {other.format} "
                                 f"(pass --data-opt {card.name}.format=FORMAT to choose)")
                    reader = other
                    break
    if root is None:
        raise not_found(card, base, flag, reader.layout, reader.title)
    return reader, root, notes, {}


def open_dataset(card: DatasetCard, data_root: Path, options: Mapping[str, Any] | None = None) -> DatasetSplits:
    """Read a dataset's split lists (no image decoding); reader errors name the dataset."""
    options = dict(options or {})
    reader, root, notes, implied = locate(card, data_root, options)
    read_options = reader_options(card, reader, {**implied, **options})
    try:
        splits = reader.read(card, root, read_options)
    except DatasetError as exc:
        raise DatasetError(f"{card.name}: {exc}") from None
    splits.format = reader.format
    splits.notes = notes + splits.notes
    for name in ("train", "test"):
        if name not in splits.splits:
            raise DatasetError(f"{card.name}: the reader found no {name} split under {root}")
    return splits


def check_files(splits: DatasetSplits) -> None:
    """Fail fast (before hours of training) if any listed image is missing."""
    from bench.data.checks import missing_files

    for split in splits.splits.values():
        missing = missing_files(split)
        if missing:
            raise DatasetError(
                f"{splits.name}: {len(missing)} image(s) listed in {split.source or split.name} are missing under "
                f"{split.root}, e.g. {', '.join(missing[:5])}"
            )


__all__ = [
    "DatasetCard", "DatasetSplits", "Split", "check_files", "expand_datasets", "get_card", "load_cards",
    "locate", "materialize", "open_dataset",
]
