"""Dataset checks: what `bench.py data` prints and what the runner verifies before a cell starts.

Reading a split list already refuses malformed files (the readers raise). On top of that a
dataset is broken when a listed image is missing, when one cannot be decoded (only checked when
`decode=True`: `bench.py data` decodes every image, the runner's pre-flight does not), or when
the train split does not cover the card's classes. A split size that differs from the card's
expected size is only a warning: published counts are not all verified.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from tqdm.auto import tqdm

from bench.data.cards import DatasetCard
from bench.data.items import DatasetSplits, Split
from bench.errors import DatasetError, UsageError

SHOW = 5  # how many offending files a message lists


@dataclass
class SplitStats:
    name: str
    images: int
    expected: int | None  # from the card; None when the card gives none
    classes_seen: int
    label_min: int  # 0-based, as the model sees them
    label_max: int
    hash: str  # content hash of the (key, label) list
    source: str
    missing: int = 0
    missing_first: list[str] = field(default_factory=list)
    unreadable: int | None = None  # None: not decoded
    unreadable_first: list[str] = field(default_factory=list)


@dataclass
class DatasetReport:
    name: str
    format: str = ""
    root: str = ""
    num_classes: int = 0
    splits: dict[str, SplitStats] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ok"] = self.ok
        return out

    def raise_if_broken(self) -> None:
        if self.errors:
            more = f" (and {len(self.errors) - 1} more problem(s))" if len(self.errors) > 1 else ""
            raise DatasetError(f"{self.errors[0]}{more}")


def missing_files(split: Split) -> list[str]:
    if not split.has_files:
        return []
    return [key for key, _ in split.items if not (split.root / key).is_file()]


def unreadable_items(split: Split, skip: set[str], progress: bool = False) -> list[str]:
    """Keys whose image cannot be decoded, with the decoder's complaint."""

    def probe(index: int) -> str | None:
        key = split.items[index][0]
        if key in skip:
            return None
        try:
            split.open(index)
        except Exception as exc:  # any decoder failure makes the image unusable
            return f"{key} ({type(exc).__name__}: {' '.join(str(exc).split())[:80]})"
        return None

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # PIL releases the GIL while decoding
        results = list(tqdm(pool.map(probe, range(len(split))), total=len(split), leave=False,
                            disable=not progress, desc=f"  decoding {split.name}"))
    return [r for r in results if r is not None]


def split_stats(card: DatasetCard, split: Split, decode: bool, progress: bool = False) -> SplitStats:
    labels = split.labels
    missing = missing_files(split)
    stats = SplitStats(name=split.name, images=len(split), expected=card.splits.get(split.name),
                       classes_seen=len(set(labels)), label_min=min(labels), label_max=max(labels),
                       hash=split.content_hash(), source=split.source, missing=len(missing),
                       missing_first=missing[:SHOW])
    if decode:
        bad = unreadable_items(split, set(missing), progress)
        stats.unreadable, stats.unreadable_first = len(bad), bad[:SHOW]
    return stats


def inspect(card: DatasetCard, data: DatasetSplits, decode: bool, progress: bool = False) -> DatasetReport:
    """Statistics and problems of every split of an opened dataset."""
    report = DatasetReport(card.name, data.format, str(data.root), card.num_classes)
    report.warnings.extend(f"{card.name}: {note}" for note in data.notes)
    problems: list[str] = []
    for name, split in data.splits.items():
        stats = report.splits[name] = split_stats(card, split, decode, progress)
        where = split.source or str(split.root)
        if stats.missing:
            problems.append(f"{stats.missing} of {stats.images} images listed in {where} are missing under "
                                 f"{split.root}, e.g. {', '.join(stats.missing_first)}")
        if stats.unreadable:
            problems.append(f"{stats.unreadable} of {stats.images} images of the {name} split cannot be "
                                 f"decoded, e.g. {', '.join(stats.unreadable_first)}")
        if stats.expected is not None and stats.expected != stats.images:
            report.warnings.append(f"{card.name}: the {name} split has {stats.images} images; "
                                   f"the card expects {stats.expected}")
    train = report.splits.get("train")
    if train is not None and train.classes_seen < 2:
        problems.append(f"the train split has images of {train.classes_seen} class(es); classification needs at "
                        f"least two")
    elif train is not None and train.classes_seen != card.num_classes:
        problems.append(f"the train split has images of {train.classes_seen} classes but the card says "
                        f"{card.num_classes} (wrong class count)")
    untested = _untested_classes(data)
    if untested:
        report.warnings.append(f"{card.name}: the test split has no image of {len(untested)} class(es) that train "
                               f"has: {', '.join(untested[:SHOW])}{' …' if len(untested) > SHOW else ''}")
    report.errors.extend(f"{card.name}: {problem}" for problem in problems)
    return report


def _untested_classes(data: DatasetSplits) -> list[str]:
    """Names (or 0-based labels) of the classes present in train but absent from test."""
    if "train" not in data.splits or "test" not in data.splits:
        return []
    absent = sorted(set(data.train.labels) - set(data.test.labels))
    names = list(data.class_names) if data.class_names is not None else None
    return [f"{names[label]} (label {label})" if names and label < len(names) else f"label {label}"
            for label in absent]


def check_dataset(card: DatasetCard, data_root, options=None, decode: bool = False, progress: bool = False
                  ) -> tuple[DatasetReport, DatasetSplits | None]:
    """Open and inspect one dataset; a reader's refusal becomes the report's error (messages start with the name)."""
    from bench.data import open_dataset

    try:
        data = open_dataset(card, data_root, options)
    except DatasetError as exc:
        return DatasetReport(card.name, num_classes=card.num_classes, errors=[str(exc)]), None
    except UsageError:
        raise  # bad flags or options, not a broken dataset
    return inspect(card, data, decode, progress), data
