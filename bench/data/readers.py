"""Registry of on-disk formats: a card's `format` names the reader that opens it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

from bench.data.cards import DatasetCard
from bench.data.items import DatasetSplits
from bench.errors import UsageError

Reader = Callable[[DatasetCard, Path, Mapping[str, Any]], DatasetSplits]
READERS: dict[str, Reader] = {}


def register_reader(fmt: str) -> Callable[[Reader], Reader]:
    def deco(fn: Reader) -> Reader:
        READERS[fmt] = fn
        return fn

    return deco


def get_reader(fmt: str) -> Reader:
    _register_builtin()
    try:
        return READERS[fmt]
    except KeyError:
        raise UsageError(f"unknown dataset format {fmt!r}; expected one of: {', '.join(sorted(READERS))}") from None


def _register_builtin() -> None:
    if READERS:
        return
    from bench.data import ufg

    READERS["ufg"] = ufg.open_ufg
