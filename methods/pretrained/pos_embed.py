"""Fit a checkpoint's position embedding and prefix tokens to the backbone being built.

Grid resize modes (`POS_EMBED_RESIZE`), computed in float64 like the originals' scipy call
(timm's `resample_abs_pos_embed` works in float32, which moves values by ~1e-6):

- ``bilinear`` (default): bilinear with ``align_corners=True``, what FFVT, TransFG, Mix-ViT and
  RAMS-Trans do (their `scipy.ndimage.zoom(grid, order=1)` is this resampling; the float32 results
  agree to within one float32 ulp, not bit for bit, since the two round in different orders);
- ``bicubic``: timm's default for its own checkpoints (bicubic, antialiased,
  ``align_corners=False``): a different initialisation, offered for comparison.

Extra prefix tokens (timm `reg_tokens`, RAMS-Trans' second class token) that the checkpoint
lacks start as copies of its class token, and their position-embedding entries as copies of
the class-token entry, as RAMS-Trans' `load_from` does.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from bench.errors import UsageError

POS_EMBED_RESIZE: dict[str, dict] = {  # F.interpolate arguments
    "bilinear": dict(mode="bilinear", antialias=False, align_corners=True),
    "bicubic": dict(mode="bicubic", antialias=True, align_corners=False),
}


def check_resize_mode(mode: str) -> None:
    if mode not in POS_EMBED_RESIZE:
        raise UsageError(f"unknown position-embedding resize {mode!r}; expected one of: {', '.join(POS_EMBED_RESIZE)}")


def resize_grid(grid: torch.Tensor, new_grid: int, mode: str = "bilinear") -> torch.Tensor:
    """[1, g·g, D] grid entries (no prefix tokens) -> [1, new_grid², D]."""
    check_resize_mode(mode)
    old = math.isqrt(grid.shape[1])
    if old * old != grid.shape[1]:
        raise ValueError(f"{grid.shape[1]} position entries do not form a square grid")
    if old == new_grid:
        return grid
    image = grid.reshape(1, old, old, -1).permute(0, 3, 1, 2).double()
    image = F.interpolate(image, size=(new_grid, new_grid), **POS_EMBED_RESIZE[mode])
    return image.permute(0, 2, 3, 1).reshape(1, new_grid * new_grid, -1).to(grid.dtype)


def adapt_tokens(tensors: dict[str, torch.Tensor], num_prefix: int, grid: int, mode: str, source: str) -> dict[str, str]:
    """Rewrite ``pos_embed`` (and ``reg_token``) in `tensors` for a backbone with `num_prefix`
    prefix tokens (class token first) and a `grid`×`grid` patch grid; returns what was changed."""
    notes: dict[str, str] = {}
    pos = tensors["pos_embed"]
    file_prefix = int("cls_token" in tensors) + (tensors["reg_token"].shape[1] if "reg_token" in tensors else 0)
    file_grid = math.isqrt(max(0, pos.shape[1] - file_prefix))
    if pos.ndim != 3 or file_grid * file_grid != pos.shape[1] - file_prefix or file_prefix < 1:
        raise UsageError(f"{source}: pos_embed {tuple(pos.shape)} is not {file_prefix} prefix token(s) plus a square "
                         f"grid; fgbench needs a class-token ViT checkpoint")
    prefix, patches = pos[:, :file_prefix], pos[:, file_prefix:]
    if num_prefix > file_prefix:
        prefix = torch.cat([prefix, prefix[:, :1].expand(-1, num_prefix - file_prefix, -1)], dim=1)
        notes["pos_embed prefix"] = f"class-token entry copied to {num_prefix - file_prefix} extra prefix token(s)"
    elif num_prefix < file_prefix:
        prefix = prefix[:, :num_prefix]
        notes["pos_embed prefix"] = f"kept the first {num_prefix} of {file_prefix} prefix entries"
    if file_grid != grid:
        patches = resize_grid(patches, grid, mode)
        notes["pos_embed grid"] = f"{file_grid}x{file_grid} -> {grid}x{grid} ({mode})"
    tensors["pos_embed"] = torch.cat([prefix, patches], dim=1)

    extra = num_prefix - 1
    have = tensors["reg_token"] if "reg_token" in tensors else tensors["cls_token"][:, :0]
    if extra > have.shape[1] and "cls_token" in tensors:
        copies = tensors["cls_token"].expand(-1, extra - have.shape[1], -1)
        tensors["reg_token"] = torch.cat([have, copies], dim=1)
        notes["reg_token"] = f"{extra - have.shape[1]} extra prefix token(s) start as copies of the class token"
    elif extra and extra < have.shape[1]:
        tensors["reg_token"] = have[:, :extra]
    return notes
