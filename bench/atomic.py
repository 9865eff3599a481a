"""Atomic file writes: a temporary file in the same folder, flushed to disk, then `os.replace`.

A reader (a report, a resumed run after SIGKILL, another shard) sees either the whole old file or
the whole new one, never half of either. The temporary is created with `os.open(..., 0o666)` so the
kernel applies the process umask, like any `open()`: on a shared results dir the group (umask 002)
or everyone (022) can read records, tables and the HTML page. (`tempfile.mkstemp` would make them
0600.) After the rename the folder itself is fsynced, so the new name survives a power cut too.
"""

from __future__ import annotations

import os
import threading
import uuid
from pathlib import Path

FILE_MODE = 0o666  # before the umask, as for open(path, "w")
_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux's /proc; setting and
    restoring it would briefly give other threads' files the wrong mode)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:  # elsewhere: a set-and-restore round trip, serialised among fgbench's own writers
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def share_tree(root: Path) -> None:
    """Give the files under `root` the mode `open()` would have: for writers outside fgbench's control
    (safetensors creates its files 0600) whose output others must read."""
    file_mode = FILE_MODE & ~current_umask()
    for path in Path(root).rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                path.chmod(file_mode)
            except OSError:  # another user's file on a shared folder: leave it as it is
                pass


def _fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable; a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a directory; the data itself is on disk
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))
