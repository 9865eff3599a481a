"""Split lists: the (image key, 0-based label) pairs of one split, plus their content hash.

An item's key is a path relative to the split's `root` for file-tree formats (UFG, CUB,
ImageFolder), or an opaque row key that the split's `opener` decodes for formats whose images
live inside files (Hugging Face datasets, parquet). A split can also be a *view* of another
(`parent` + `indices`): the carved train/val of `--val-fraction` share their parent's
decode-and-resize cache.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

from PIL import Image

from bench.data.images import open_rgb


def hash_items(items: Sequence[tuple[str, int]]) -> str:
    """sha256 over the ordered (key, label) list: identifies the split, not the pixels."""
    h = hashlib.sha256()
    for key, label in items:
        h.update(f"{key}\t{label}\n".encode())
    return h.hexdigest()[:16]


@dataclass
class Split:
    """One split of a dataset as a list of items; images are decoded lazily by the Dataset."""

    name: str
    root: Path  # file keys are relative to this folder
    items: list[tuple[str, int]]  # (key, 0-based label)
    source: str = ""  # the file the list came from, for messages
    # decodes one key as RGB; None: the key is a file under `root` (opened with `open_rgb`)
    opener: Callable[[str], Image.Image] | None = None
    # identifies the bytes behind an opener-based split (source files' sizes and times), for the cache
    fingerprint: str = ""
    parent: "Split | None" = field(default=None, repr=False)  # set on views (carved splits)
    indices: list[int] | None = field(default=None, repr=False)  # positions in `parent`

    def __len__(self) -> int:
        return len(self.items)

    @property
    def labels(self) -> list[int]:
        return [label for _, label in self.items]

    @property
    def has_files(self) -> bool:
        """Whether items are files on disk (checked for existence before a run)."""
        return self.opener is None

    def path(self, index: int) -> Path:
        return self.root / self.items[index][0]

    def open(self, index: int) -> Image.Image:
        """Decode item `index` as an 8-bit RGB PIL image."""
        key = self.items[index][0]
        return self.opener(key) if self.opener is not None else open_rgb(self.root / key)

    def decode(self, index: int) -> Image.Image:
        """`open`, with a failure naming the file (or row key) and the split, for a cell's error message."""
        try:
            return self.open(index)
        except Exception as exc:  # any decoder failure: say which image
            from bench.errors import DatasetError

            where = self.path(index) if self.has_files else f"{self.items[index][0]} ({self.source or self.name})"
            raise DatasetError(f"cannot decode image {where} of the {self.name} split ({type(exc).__name__}: "
                               f"{' '.join(str(exc).split())[:120]}); `bench.py data` lists every unreadable "
                               f"image") from exc

    def content_hash(self) -> str:
        return hash_items(self.items)

    def view(self, name: str, indices: Sequence[int]) -> "Split":
        """A split made of some of this split's items (in the given order), remembering where they came from."""
        base, offsets = (self.parent, self.indices) if self.parent is not None else (self, None)
        absolute = [offsets[i] for i in indices] if offsets is not None else list(indices)
        return replace(self, name=name, items=[self.items[i] for i in indices], parent=base, indices=absolute,
                       source=f"{self.source or self.name} ({name} part)")


@dataclass
class DatasetSplits:
    """What a reader returns: the splits found on disk and where they came from."""

    name: str
    root: Path
    num_classes: int
    format: str = ""
    splits: dict[str, Split] = field(default_factory=dict)
    class_names: Sequence[str] | None = None
    notes: list[str] = field(default_factory=list)  # things the reader decided that a user should see

    @property
    def train(self) -> Split:
        return self.splits["train"]

    @property
    def test(self) -> Split:
        return self.splits["test"]

    def hashes(self) -> dict[str, str]:
        return {name: split.content_hash() for name, split in self.splits.items()}
