"""Exceptions that map to exit statuses.

`UsageError` (and its subclasses) is bad input: the CLI prints its message as one line and exits
with status 2, never a traceback. Anything else raised inside a cell is a cell failure, recorded
in that cell's record while the matrix goes on.
"""


class UsageError(Exception):
    """Bad input from the user: unknown name, malformed flag, missing or ill-formed dataset."""

    exit_status = 2


class DatasetError(UsageError):
    """A dataset on disk is missing or does not match its card."""


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""


def one_line(text: str, limit: int = 400) -> str:
    """Collapse whitespace so an error message prints as exactly one line."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
