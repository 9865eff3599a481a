"""Dataset cards: YAML files in `datasets/` that describe each dataset as data.

A card names the dataset and its aliases (the folder names users have on disk), its on-disk
format, class count, expected split sizes (a mismatch warns, never fails) and the papers' recipe
defaults per method family. Adding a dataset is adding a card; no Python changes.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import yaml

from bench.errors import UsageError

CARD_KEYS = {
    "name", "title", "aliases", "format", "num_classes", "splits", "recipes", "presets", "generator",
    "members", "source", "notes", "reader", "in_all",
}


@dataclass(frozen=True)
class DatasetCard:
    name: str
    title: str
    format: str
    num_classes: int
    path: Path
    aliases: tuple[str, ...] = ()
    splits: Mapping[str, int] = field(default_factory=dict)  # expected sizes, warn on mismatch
    recipes: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # 'default' + method families
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # per-preset recipe overrides
    generator: str | None = None  # built on first use (the demo)
    members: tuple[str, ...] = ()  # a group card expands to these datasets
    reader: Mapping[str, Any] = field(default_factory=dict)  # reader options (columns, label offset, ...)
    source: str = ""
    notes: str = ""
    in_all: bool = True

    @property
    def is_group(self) -> bool:
        return bool(self.members)

    def recipe_layers(self, family: str) -> list[tuple[str, Mapping[str, Any]]]:
        """The card's recipe layers for a method family, lowest precedence first."""
        stem = f"datasets/{self.path.name}"
        return [
            (f"{stem} recipes.default", self.recipes.get("default", {})),
            (f"{stem} recipes.{family}", self.recipes.get(family, {})),
        ]

    def preset_layer(self, preset: str) -> tuple[str, Mapping[str, Any]]:
        """The card's overrides for one preset (applied above the preset's own values)."""
        return (f"datasets/{self.path.name} presets.{preset}", self.presets.get(preset, {}))


def card_dirs() -> list[Path]:
    """Where cards are looked up: $FGBENCH_CARDS (os.pathsep-separated), the checkout, the install."""
    dirs = [Path(p) for p in os.environ.get("FGBENCH_CARDS", "").split(os.pathsep) if p]
    dirs.append(Path(__file__).resolve().parents[2] / "datasets")
    dirs.append(Path(sys.prefix) / "share" / "fgbench" / "datasets")
    return [d for d in dirs if d.is_dir()]


def _load_card(path: Path) -> DatasetCard:
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UsageError(f"dataset card {path} is not valid YAML: {' '.join(str(exc).split())}") from None
    unknown = set(raw) - CARD_KEYS
    if unknown:
        raise UsageError(f"dataset card {path} has unknown keys {sorted(unknown)}; expected {sorted(CARD_KEYS)}")
    for key in ("name", "format", "num_classes"):
        if key not in raw and not raw.get("members"):
            raise UsageError(f"dataset card {path} lacks the required key {key!r}")
    return DatasetCard(
        name=str(raw["name"]),
        title=str(raw.get("title", raw["name"])),
        format=str(raw.get("format", "group")),
        num_classes=int(raw.get("num_classes", 0)),
        path=path,
        aliases=tuple(str(a) for a in raw.get("aliases", ())),
        splits={str(k): int(v) for k, v in (raw.get("splits") or {}).items()},
        recipes=raw.get("recipes") or {},
        presets=raw.get("presets") or {},
        generator=raw.get("generator"),
        members=tuple(raw.get("members", ())),
        reader=raw.get("reader") or {},
        source=str(raw.get("source", "")),
        notes=str(raw.get("notes", "")),
        in_all=bool(raw.get("in_all", True)),
    )


@lru_cache(maxsize=None)
def load_cards() -> dict[str, DatasetCard]:
    """All cards by canonical name; the first directory in `card_dirs()` wins on a name clash."""
    cards: dict[str, DatasetCard] = {}
    for directory in card_dirs():
        for path in sorted(directory.glob("*.y*ml")):
            card = _load_card(path)
            cards.setdefault(card.name, card)
    return cards


def _alias_index() -> dict[str, str]:
    index: dict[str, str] = {}
    for card in load_cards().values():
        for alias in (card.name, *card.aliases):
            index.setdefault(alias, card.name)
    return index


def get_card(name: str) -> DatasetCard:
    """Look a card up by canonical name or alias (exact first, then case-insensitive)."""
    cards = load_cards()
    index = _alias_index()
    canonical = index.get(name)
    if canonical is None:
        folded = {k.lower(): v for k, v in index.items()}
        canonical = folded.get(name.lower())
    if canonical is None:
        raise UsageError(f"unknown dataset {name!r}; expected one of: {', '.join(cards)} (or an alias, see `bench.py list`)")
    return cards[canonical]


def expand_datasets(spec: str) -> list[str]:
    """A comma list of names/aliases (or `all`) -> canonical dataset names, groups expanded, order kept."""
    cards = load_cards()
    items = [s.strip() for s in spec.split(",") if s.strip()]
    if not items:
        raise UsageError("--datasets is empty; give a comma list of dataset names or 'all'")
    out: list[str] = []
    for item in items:
        if item == "all":
            names = [c.name for c in cards.values() if c.in_all and not c.is_group and not c.generator]
        else:
            card = get_card(item)
            names = list(card.members) if card.is_group else [card.name]
            for member in names:
                get_card(member)  # a group naming an unknown card is a broken card
        out.extend(n for n in names if n not in out)
    return out
