"""Split lists: the (image path, 0-based label) pairs of one split, plus their content hash."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence


@dataclass
class Split:
    """One split of a dataset as a list of files; images are decoded lazily by the Dataset."""

    name: str
    root: Path  # image paths are relative to this folder
    items: list[tuple[str, int]]  # (relative path, 0-based label)
    source: str = ""  # the file the list came from, for messages

    def __len__(self) -> int:
        return len(self.items)

    @property
    def labels(self) -> list[int]:
        return [label for _, label in self.items]

    def content_hash(self) -> str:
        """sha256 over the ordered (path, label) list: identifies the split, not the pixels."""
        h = hashlib.sha256()
        for path, label in self.items:
            h.update(f"{path}\t{label}\n".encode())
        return h.hexdigest()[:16]


@dataclass
class DatasetSplits:
    """What a reader returns: the splits found on disk and where they came from."""

    name: str
    root: Path
    num_classes: int
    splits: dict[str, Split] = field(default_factory=dict)
    class_names: Sequence[str] | None = None
    # opens one item as a PIL RGB image; readers of file trees use the default (PIL from disk)
    loader: Callable | None = None

    @property
    def train(self) -> Split:
        return self.splits["train"]

    @property
    def test(self) -> Split:
        return self.splits["test"]

    def hashes(self) -> dict[str, str]:
        return {name: split.content_hash() for name, split in self.splits.items()}
