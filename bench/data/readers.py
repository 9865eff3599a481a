"""Registry of on-disk formats: a card's `format` names the reader that opens it.

A reader is a function `read(card, root, options) -> DatasetSplits` registered with how to
recognise its layout in a folder (`looks_like`), a one-line description of that layout for
error messages, and its options with their defaults. Options come from the card's `reader:`
block (flat keys for the card's own format, `reader.<format>:` sub-blocks for the others) and
from `--data-opt NAME.KEY=VALUE`; `path` and `format` are understood for every format.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from bench.data.cards import DatasetCard
from bench.data.items import DatasetSplits
from bench.errors import UsageError

# modules whose import registers the built-in formats; detection tries them in this order (the
# most specific marker files first)
BUILTIN = ("bench.data.ufg", "bench.data.dogs", "bench.data.cars", "bench.data.inat", "bench.data.cub",
           "bench.data.nabirds", "bench.data.hf", "bench.data.imagefolder")
COMMON_OPTIONS = {"path": "exact folder of the dataset (--data-path)", "format": "read the folder as this format"}

ReadFn = Callable[[DatasetCard, Path, Mapping[str, Any]], DatasetSplits]


@dataclass(frozen=True)
class Reader:
    format: str
    read: ReadFn
    looks_like: Callable[[Path], bool]
    layout: str  # what the folder must contain, for messages
    title: str  # the layout's usual name, for messages
    options: Mapping[str, Any] = field(default_factory=dict)  # option -> default


READERS: dict[str, Reader] = {}


def register_reader(fmt: str, *, looks_like: Callable[[Path], bool], layout: str, title: str,
                    options: Mapping[str, Any] | None = None) -> Callable[[ReadFn], ReadFn]:
    def deco(fn: ReadFn) -> ReadFn:
        READERS[fmt] = Reader(fmt, fn, looks_like, layout, title, dict(options or {}))
        return fn

    return deco


def _register_builtin() -> None:
    for module in BUILTIN:
        importlib.import_module(module)


def get_reader(fmt: str) -> Reader:
    _register_builtin()
    try:
        return READERS[fmt]
    except KeyError:
        raise UsageError(f"unknown dataset format {fmt!r}; expected one of: {', '.join(sorted(READERS))}") from None


def all_readers() -> list[Reader]:
    _register_builtin()
    return list(READERS.values())


def _coerce(reader: Reader, key: str, value: Any, source: str) -> Any:
    default = reader.options[key]
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(default, str):
        return str(value)
    else:
        return value
    raise UsageError(f"reader option {key!r} ({source}) must be {type(default).__name__}, got {value!r}")


def reader_options(card: DatasetCard, reader: Reader, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults < the card's `reader:` block < command-line `--data-opt`, unknown keys refused."""
    _register_builtin()
    block = dict(card.reader or {})
    per_format = {k: block.pop(k) for k in list(block) if k in READERS}
    layers = [(f"datasets/{card.path.name} reader.{reader.format}", per_format.get(reader.format) or {})]
    if reader.format == card.format:
        layers.insert(0, (f"datasets/{card.path.name} reader", block))
    layers.append((f"--data-opt {card.name}.KEY", overrides))
    out = dict(reader.options)
    for source, layer in layers:
        for key, value in layer.items():
            if key in COMMON_OPTIONS:
                continue
            if key not in reader.options:
                known = ", ".join(sorted([*reader.options, *COMMON_OPTIONS]))
                raise UsageError(f"unknown reader option {key!r} for {card.name} ({reader.format} format) in {source}; "
                                 f"options: {known}")
            out[key] = _coerce(reader, key, value, source)
    return out
