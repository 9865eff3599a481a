"""Finding a dataset's folder under `--data-root` from its card's name and aliases."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from bench.data.cards import DatasetCard
from bench.errors import DatasetError


def candidate_roots(card: DatasetCard, data_root: Path) -> list[Path]:
    """data_root itself, data_root/<name or alias>, and one wrapper folder deeper in each."""
    direct = [data_root] + [data_root / n for n in (card.name, *card.aliases)]
    out: list[Path] = []
    for path in direct:
        if path not in out:
            out.append(path)
    for path in direct[1:]:
        if path.is_dir():
            for child in sorted(p for p in path.iterdir() if p.is_dir()):
                if child not in out:
                    out.append(child)
    return out


def find_root(card: DatasetCard, data_root: Path, looks_like: Callable[[Path], bool], layout: str) -> Path:
    """The first candidate folder that `looks_like` the dataset, or a DatasetError naming what was tried."""
    data_root = Path(data_root)
    if not data_root.exists():
        raise DatasetError(f"--data-root {data_root} does not exist; expected a folder holding {card.name}/ ({layout})")
    for path in candidate_roots(card, data_root):
        if path.is_dir() and looks_like(path):
            return path
    names = ", ".join([card.name, *card.aliases])
    raise DatasetError(
        f"dataset {card.name!r} not found under {data_root}: expected a folder named one of [{names}] "
        f"containing {layout} (or --data-path {card.name}=DIR)"
    )
