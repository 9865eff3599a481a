"""Checkpoint file formats, by suffix: each reader returns timm-named tensors.

- ``.npz``: Google ViT / R50+ViT layout (`methods.pretrained.google_npz`), read with
  `allow_pickle=False`;
- ``.pth``, ``.pt``, ``.bin``: a timm `VisionTransformer` state dict saved with `torch.save`
  (optionally under a ``state_dict`` or ``model`` key, optionally with DDP's ``module.`` prefix),
  read with `weights_only=True`;
- ``.safetensors``: the same state dict in safetensors format (timm's Hub files).

Nothing is fetched: the file must already be on disk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import torch

from bench.errors import UsageError


@dataclass
class Checkpoint:
    tensors: dict[str, torch.Tensor]
    unconverted: list[str] = field(default_factory=list)  # entries of the file that name no timm tensor
    format: str = ""


def read_npz(path: Path) -> Checkpoint:
    import numpy as np

    from methods.pretrained.google_npz import convert

    try:
        arrays = np.load(path, allow_pickle=False)
        if not isinstance(arrays, np.lib.npyio.NpzFile):
            raise ValueError(f"it holds one {type(arrays).__name__}, not named arrays")
        with arrays:
            tensors, unconverted = convert(arrays, source=path.name)
    except UsageError:
        raise
    except Exception as exc:  # truncated or empty zips, foreign files: numpy raises several types
        raise UsageError(f"--pretrained {path}: cannot read it as .npz ({type(exc).__name__}: {exc})") from None
    return Checkpoint(tensors, unconverted, "google-npz")


def _timm_state_dict(raw: object, path: Path) -> Checkpoint:
    if isinstance(raw, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(raw.get(key), Mapping):
                raw = raw[key]
                break
    if not isinstance(raw, Mapping):
        raise UsageError(f"--pretrained {path}: expected a state dict (name -> tensor), found {type(raw).__name__}")
    tensors, other = {}, []
    for key, value in raw.items():
        if isinstance(key, str) and isinstance(value, torch.Tensor):
            tensors[key[len("module."):] if key.startswith("module.") else key] = value
        else:
            other.append(key)
    return Checkpoint(tensors, sorted(map(str, other)), "timm-state-dict")


def read_torch(path: Path) -> Checkpoint:
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for foreign or corrupt files
        raise UsageError(f"--pretrained {path}: cannot read it with torch.load ({type(exc).__name__}: {exc})") from None
    return _timm_state_dict(raw, path)


def read_safetensors(path: Path) -> Checkpoint:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        raw = load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as exc:
        raise UsageError(f"--pretrained {path}: cannot read it as safetensors ({exc})") from None
    return _timm_state_dict(raw, path)


READERS: dict[str, Callable[[Path], Checkpoint]] = {
    ".npz": read_npz,
    ".pth": read_torch,
    ".pt": read_torch,
    ".bin": read_torch,
    ".safetensors": read_safetensors,
}


def check_format(path: Path) -> Callable[[Path], Checkpoint]:
    try:
        return READERS[path.suffix.lower()]
    except KeyError:
        raise UsageError(f"--pretrained {path}: unknown checkpoint format {path.suffix or '(no suffix)'!r}; "
                         f"expected one of: {', '.join(READERS)}") from None


def read_checkpoint(path: str | Path) -> Checkpoint:
    path = Path(path)
    return check_format(path)(path)
