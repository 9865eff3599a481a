"""Identify a weights file by content: sha256, computed once per (path, size, mtime).

A cell's id must not change when the same checkpoint is moved, and must change when a file at
the same path is replaced; hashing the bytes does both. Hashing ViT-B (~350 MB) takes a second,
so the digest is cached per process, keyed by what would change if the file did.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from bench.errors import UsageError
from methods.pretrained.formats import check_format

BLOCK = 1 << 20


def _hash_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


@lru_cache(maxsize=64)
def _cached(path: str, size: int, mtime_ns: int) -> str:
    return _hash_file(path)


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 hex digest of the file's bytes (cached by resolved path, size and mtime)."""
    resolved = str(Path(path).resolve())
    st = os.stat(resolved)
    return _cached(resolved, st.st_size, st.st_mtime_ns)


@dataclass(frozen=True)
class PretrainedFile:
    """A local checkpoint: where it is (for the record) and what it is (for the cell id)."""

    path: str
    sha256: str

    @classmethod
    def from_path(cls, path: str | os.PathLike) -> "PretrainedFile":
        p = Path(path).expanduser()
        if not p.is_file():
            raise UsageError(f"--pretrained {path}: no such file; give a local .npz, .pth or .safetensors checkpoint")
        check_format(p)
        return cls(path=str(p.resolve()), sha256=file_sha256(p))
