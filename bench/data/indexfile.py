"""Two-column index files (`<key> <value>` per line), as the UFG and CUB layouts ship them.

One tolerant parser for both: UTF-8 with or without a BOM, CRLF, blank lines skipped, and a line
that does not split into two fields is a one-line error naming the file, the line and the form.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from bench.errors import DatasetError


def two_column_lines(path: Path, form: str, *, split_at_last: bool) -> Iterator[tuple[int, str, str]]:
    """`(line number, first field, second field)` for every non-blank line of `path`.

    `split_at_last` splits at the last whitespace (UFG: the path may contain spaces, the label
    may not); otherwise at the first (CUB: the id may not, the value may). `form` is the expected
    line, e.g. ``'<image_id> <value>'``, for the error messages.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM from Windows editors is not part of the first field
    except UnicodeDecodeError:
        raise DatasetError(f"{path} is not UTF-8 text; expected {form!s} lines") from None
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        parts = line.rsplit(maxsplit=1) if split_at_last else line.split(maxsplit=1)
        if len(parts) != 2:
            raise DatasetError(f"{path}:{lineno}: expected {form!s}, got {line!r}")
        yield lineno, parts[0], parts[1].strip()
