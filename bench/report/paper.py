"""Published numbers (`reference_results.yaml`): loaded, validated, looked up per (method, dataset).

They are data, not code, and they are shown in their own "paper" columns: most were chosen as the
best test accuracy over periodic evaluations of one seed, which is not what fgbench's headline
(last-step accuracy over several seeds) measures, and few have been checked against the PDFs.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from bench.errors import UsageError

DEFAULT_PATH = Path(__file__).with_name("reference_results.yaml")
SCHEMA_VERSION = 1
REQUIRED = ("method", "dataset", "top1", "source", "verified")
OPTIONAL = ("confidence", "selection", "backbone", "note", "url")
CONFIDENCE_LEVELS = ("repository", "cited", "memory")
SELECTIONS = ("best_test", "last", "val", "unknown")
PAPER_COLUMNS = list(REQUIRED + OPTIONAL)
_NAME = re.compile(r"^[a-z0-9_]+$")


def _check_entry(entry: Any, where: str) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise UsageError(f"{where}: expected a mapping with keys {', '.join(REQUIRED)}, got {entry!r}")
    unknown = sorted(set(entry) - set(REQUIRED) - set(OPTIONAL))
    missing = [k for k in REQUIRED if k not in entry]
    if unknown or missing:
        raise UsageError(f"{where}: " + "; ".join(
            ([f"unknown keys {unknown}"] if unknown else []) + ([f"missing keys {missing}"] if missing else []))
            + f" (keys: {', '.join(PAPER_COLUMNS)})")
    for key in ("method", "dataset"):
        if not isinstance(entry[key], str) or not _NAME.match(entry[key]):
            raise UsageError(f"{where}: {key} must be an fgbench name in lower case [a-z0-9_], got {entry[key]!r}")
    top1 = entry["top1"]
    if isinstance(top1, bool) or not isinstance(top1, (int, float)) or not (0 <= top1 <= 100) or math.isnan(top1):
        raise UsageError(f"{where}: top1 must be a percentage between 0 and 100, got {top1!r}")
    if not isinstance(entry["verified"], bool):
        raise UsageError(f"{where}: verified must be true or false, got {entry['verified']!r}")
    if not isinstance(entry["source"], str) or not entry["source"].strip():
        raise UsageError(f"{where}: source must say where the number comes from")
    url = entry.get("url")
    if url is not None and not (isinstance(url, str) and re.match(r"^https?://\S+$", url)):
        raise UsageError(f"{where}: url must be an http(s) address of the table quoted, got {url!r}")
    if entry["verified"] is True and not url:
        raise UsageError(f"{where}: a verified entry needs the url of the table it was checked against")
    for key, allowed in (("confidence", CONFIDENCE_LEVELS), ("selection", SELECTIONS)):
        if key in entry and entry[key] not in allowed:
            raise UsageError(f"{where}: {key} must be one of {', '.join(allowed)}, got {entry[key]!r}")
    return {key: entry.get(key) for key in PAPER_COLUMNS} | {"top1": float(top1)}


def load_paper_results(path: Path | None = None) -> pd.DataFrame:
    """The published numbers as a frame (file order kept); bad files raise UsageError (exit 2)."""
    path = Path(path) if path is not None else DEFAULT_PATH
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise UsageError(f"cannot read published results {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"published results {path} are not valid YAML: {' '.join(str(exc).split())}") from None
    if not (isinstance(raw, dict) and raw.get("schema_version") == SCHEMA_VERSION
            and isinstance(raw.get("results"), list)):
        raise UsageError(f"published results {path}: expected 'schema_version: {SCHEMA_VERSION}' and a 'results:' list")
    entries = [_check_entry(e, f"{path.name} results[{i}]") for i, e in enumerate(raw["results"])]
    return pd.DataFrame(entries, columns=PAPER_COLUMNS)


def paper_lookup(paper: pd.DataFrame | None) -> dict[tuple[str, str], dict[str, Any]]:
    """(method, dataset) -> the first entry for it (the file's order decides which one is shown)."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    if paper is None:
        return out
    for entry in paper.to_dict("records"):
        out.setdefault((entry["method"], entry["dataset"]), entry)
    return out
