"""Datasets: cards, readers, checks, transforms and loaders."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from bench.data.cards import DatasetCard, expand_datasets, get_card, load_cards
from bench.data.items import DatasetSplits, Split
from bench.data.readers import get_reader
from bench.errors import DatasetError

GENERATORS = {"demo": "bench.data.demo"}


def materialize(card: DatasetCard, data_root: Path) -> None:
    """Build generated datasets (the demo) under data_root on first use."""
    if not card.generator:
        return
    import importlib

    module = importlib.import_module(GENERATORS[card.generator])
    module.ensure(Path(data_root) / card.name)


def open_dataset(card: DatasetCard, data_root: Path, options: Mapping[str, Any] | None = None) -> DatasetSplits:
    """Read a dataset's split lists (no image decoding) and check them against the card."""
    splits = get_reader(card.format)(card, Path(data_root), options or {})
    for name in ("train", "test"):
        if name not in splits.splits:
            raise DatasetError(f"{card.name}: the reader found no {name} split under {splits.root}")
    return splits


def missing_files(split: Split, limit: int = 5) -> tuple[int, list[str]]:
    """How many listed files do not exist, and the first few of them."""
    missing = [rel for rel, _ in split.items if not (split.root / rel).is_file()]
    return len(missing), missing[:limit]


def check_files(splits: DatasetSplits) -> None:
    """Fail fast (before hours of training) if any listed image is missing."""
    if splits.loader is not None:  # in-memory formats have no files to check
        return
    for split in splits.splits.values():
        count, first = missing_files(split)
        if count:
            raise DatasetError(
                f"{splits.name}: {count} image(s) listed in {split.source or split.name} are missing under "
                f"{split.root}, e.g. {', '.join(first)}"
            )


__all__ = [
    "DatasetCard", "DatasetSplits", "Split", "check_files", "expand_datasets", "get_card", "load_cards",
    "materialize", "missing_files", "open_dataset",
]
