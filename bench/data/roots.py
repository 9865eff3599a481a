"""Finding a dataset's folder from its card's name and aliases.

Users keep datasets under the names the original repositories used (`soybean200`, `COTTON`,
`CUB_200_2011`, `SoyAgeing-R1/R1`, ...). Under a base folder (`--data-root`, or a
`--data-path NAME=DIR`) the candidates are, in order: the base itself, `base/<name or alias>`
(matched case-insensitively, `/` in an alias meaning nested folders), and one wrapper folder
deeper in each of those (archives often unpack to `Cotton80/COTTON/...`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from bench.data.cards import DatasetCard
from bench.errors import DatasetError


def child(parent: Path, name: str) -> Path | None:
    """`parent/name` as a folder, matching each component case-insensitively; None when absent."""
    path = parent
    for part in Path(name).parts:
        exact = path / part
        if exact.is_dir():
            path = exact
            continue
        if not path.is_dir():
            return None
        folded = [p for p in sorted(path.iterdir()) if p.is_dir() and p.name.lower() == part.lower()]
        if not folded:
            return None
        path = folded[0]
    return path


def candidate_roots(card: DatasetCard, base: Path, explicit: bool = False) -> list[Path]:
    """base itself, base/<name or alias>, and one wrapper folder deeper in each alias folder.

    `explicit`: the base was named for this dataset (`--data-path`), so any folder directly in it
    may be the wrapper; under a shared `--data-root` only the alias folders are searched.
    """
    out: list[Path] = [base]
    named: list[Path] = []
    for name in (card.name, *card.aliases):
        path = child(base, name)
        if path is not None and path not in out:
            out.append(path)
            named.append(path)
    for path in ([base] if explicit else []) + named:
        for sub in sorted(p for p in path.iterdir() if p.is_dir()) if path.is_dir() else []:
            if sub not in out:
                out.append(sub)
    return out


def find_root(card: DatasetCard, base: Path, looks_like: Callable[[Path], bool], explicit: bool = False) -> Path | None:
    """The first candidate folder that `looks_like` the dataset, or None."""
    base = Path(base)
    if not base.is_dir():
        return None
    return next((path for path in candidate_roots(card, base, explicit) if looks_like(path)), None)


def require_base(card: DatasetCard, base: Path, flag: str, layout: str) -> None:
    """A DatasetError when the folder a user pointed at does not exist at all."""
    if not Path(base).is_dir():
        raise DatasetError(f"{flag} {base} does not exist or is not a folder; expected a folder holding "
                           f"{card.name} ({layout})")


def not_found(card: DatasetCard, base: Path, flag: str, layout: str, title: str) -> DatasetError:
    if flag == "--data-path":
        return DatasetError(f"--data-path {card.name}={base} is not a {title} dataset folder, nor holds one (directly "
                            f"or one wrapper folder deeper); expected {layout}")
    names = ", ".join([card.name, *card.aliases])
    return DatasetError(
        f"dataset {card.name!r} not found under {flag} {base}: expected the folder itself, or a folder named one "
        f"of [{names}] (or one wrapper folder deeper), containing {layout} (or --data-path {card.name}=DIR)"
    )
