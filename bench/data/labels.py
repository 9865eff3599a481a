"""Label checks shared by the readers: shift to 0-based, refuse out-of-range and mis-based files.

Files on disk number classes from `label_offset` (1 for UFG and CUB, 0 for Hugging Face
datasets). A file that uses the other convention shows one label outside the range, and the
message says which option would read it; nothing is shifted silently.
"""

from __future__ import annotations

from typing import Sequence

from bench.errors import DatasetError


def zero_based(raw: Sequence[int], where: Sequence[str], num_classes: int, offset: int, dataset: str) -> list[int]:
    """`raw - offset` for every label, or a DatasetError naming the first label out of range."""
    labels = [value - offset for value in raw]
    for label, place in zip(labels, where):
        if 0 <= label < num_classes:
            continue
        hint = ""
        if label == -1 and offset == 1:
            hint = (f"; the file looks 0-based, and these files are 1-based: pass --data-opt {dataset}.label_offset=0 "
                    "if it really is 0-based")
        elif label == num_classes and offset == 0:
            hint = f"; the labels look 1-based: pass --data-opt {dataset}.label_offset=1"
        raise DatasetError(
            f"{place}: label {label + offset} is out of range {offset}..{num_classes - 1 + offset} "
            f"for {num_classes} classes{hint}"
        )
    return labels


def parse_int(token: str, place: str) -> int:
    try:
        return int(token)
    except ValueError:
        raise DatasetError(f"{place}: label {token!r} is not an integer") from None
