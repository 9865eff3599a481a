"""MATLAB `.mat` split lists (Stanford Dogs, Stanford Cars), read with `scipy.io.loadmat`.

MATLAB cell arrays and struct fields arrive as nested object arrays (`[[array(['x.jpg'])]]`);
these helpers flatten one column to plain Python strings or integers, and turn every way a file
can be wrong (unreadable, a key or field absent, a cell that is not one string or one integer)
into a one-line DatasetError naming the file and what was expected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import DatasetError


def load_mat(path: Path, what: str) -> dict[str, Any]:
    """The variables of a `.mat` file; `what` says what the file should be, for messages."""
    from scipy.io import loadmat

    if not path.is_file():
        raise DatasetError(f"missing {path}; expected {what}")
    try:
        return loadmat(str(path))
    except Exception as exc:  # scipy raises ValueError, TypeError, MatReadError... for a damaged file
        raise DatasetError(f"{path} is not a readable MATLAB .mat file ({type(exc).__name__}: "
                           f"{' '.join(str(exc).split())[:80]}); expected {what}") from None


def variable(mat: dict[str, Any], key: str, path: Path) -> np.ndarray:
    if key not in mat:
        found = ", ".join(sorted(k for k in mat if not k.startswith("__"))) or "none"
        raise DatasetError(f"{path} has no variable {key!r} (variables: {found})")
    return np.asarray(mat[key])


def _scalar(cell: Any) -> Any:
    """The one value inside a MATLAB cell, however deeply scipy nested it; None if it is not one value."""
    value = cell
    while isinstance(value, np.ndarray):
        if value.size != 1:
            return None
        value = value.reshape(-1)[0]
    return value


def strings(column: Any, where: str) -> list[str]:
    """A MATLAB cell column of strings as a list; `where` names the column, e.g. `file:variable`."""
    out = []
    for index, cell in enumerate(np.asarray(column, dtype=object).reshape(-1)):
        value = _scalar(cell)
        if not isinstance(value, str) or not value.strip():
            raise DatasetError(f"{where}[{index}]: expected a file name, got {cell!r}")
        out.append(value.strip())
    return out


def integers(column: Any, where: str) -> list[int]:
    """A MATLAB numeric column (or cell column of numbers) as a list of ints."""
    out = []
    for index, cell in enumerate(np.asarray(column, dtype=object).reshape(-1)):
        value = _scalar(cell)
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)) \
                or float(value) != int(value):
            raise DatasetError(f"{where}[{index}]: label {cell!r} is not an integer")
        out.append(int(value))
    return out


def struct_field(records: np.ndarray, name: str, path: Path, key: str) -> np.ndarray:
    """One field of a MATLAB struct array (e.g. `annotations.fname`), one entry per struct."""
    names = records.dtype.names or ()
    if name not in names:
        raise DatasetError(f"{path}: the {key!r} structs have no field {name!r} (fields: {', '.join(names) or 'none'})")
    return records[name].reshape(-1)
