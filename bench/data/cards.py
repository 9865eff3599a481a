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


def builtin_card_dirs() -> list[Path]:
    """The cards shipped with fgbench: the checkout's `datasets/`, then an installed copy."""
    dirs = [Path(__file__).resolve().parents[2] / "datasets", Path(sys.prefix) / "share" / "fgbench" / "datasets"]
    return [d for d in dirs if d.is_dir()]


def user_card_dirs() -> list[Path]:
    """Folders of the user's own cards: $FGBENCH_CARDS (os.pathsep-separated)."""
    return [Path(p) for p in os.environ.get("FGBENCH_CARDS", "").split(os.pathsep) if p and Path(p).is_dir()]


def card_dirs() -> list[Path]:
    """Every folder cards are read from, user folders first."""
    return user_card_dirs() + builtin_card_dirs()


_CARD_FILES: list[Path] = []  # from --card FILE


def use_card_files(paths) -> None:
    """The user card files of this command (`--card FILE`); a missing file is a usage error."""
    files: list[Path] = []
    for path in map(Path, paths):
        if not path.is_file():
            raise UsageError(f"--card {path}: no such file; expected a dataset card (YAML, like datasets/cub.yaml)")
        if path.resolve() not in (p.resolve() for p in files):
            files.append(path)
    if files != _CARD_FILES:
        _CARD_FILES[:] = files
        load_cards.cache_clear()


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
    if not raw.get("members"):
        try:
            classes = int(raw["num_classes"])
        except (TypeError, ValueError):
            raise UsageError(f"dataset card {path}: num_classes must be an integer, "
                             f"got {raw['num_classes']!r}") from None
        if classes < 2:
            raise UsageError(f"dataset card {path}: num_classes is {classes}; a classification benchmark needs at "
                             f"least two classes")
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


def _names(card: DatasetCard) -> set[str]:
    return {n.lower() for n in (card.name, *card.aliases)}


@lru_cache(maxsize=None)
def load_cards() -> dict[str, DatasetCard]:
    """All cards by canonical name: the built-in ones, then the user's ($FGBENCH_CARDS folders, `--card` files).

    A user card may add a dataset but never replace one: a name or alias that a built-in card (or
    another user card) already uses is refused, so `--datasets cub` always means the same data.
    """
    cards: dict[str, DatasetCard] = {}
    for directory in builtin_card_dirs():
        for path in sorted(directory.glob("*.y*ml")):
            card = _load_card(path)
            cards.setdefault(card.name, card)  # the checkout's copy wins over an installed one
    builtin = dict(cards)
    user_files = [p for d in user_card_dirs() for p in sorted(d.glob("*.y*ml"))] + _CARD_FILES
    seen: set[Path] = set()
    for path in user_files:
        if path.resolve() in seen:
            continue
        seen.add(path.resolve())
        card = _load_card(path)
        for other in cards.values():
            clash = sorted(_names(card) & _names(other))
            if clash:
                kind = "the built-in dataset" if other.name in builtin else "the user dataset"
                raise UsageError(f"dataset card {path} uses the name {clash[0]!r}, already taken by {kind} "
                                 f"{other.name} ({other.path}); give the card another name and aliases")
        cards[card.name] = card
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
        raise UsageError(f"unknown dataset {name!r}; expected one of: {', '.join(cards)} (or an alias, see "
                         f"`bench.py list`); to add one, write a card like datasets/cub.yaml and pass --card FILE "
                         f"or name its folder in $FGBENCH_CARDS")
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
