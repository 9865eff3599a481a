"""Pretrained weights from a local file (`--pretrained PATH`); nothing is ever downloaded.

Public API:

- `PretrainedFile.from_path(path)` -> `PretrainedFile(path, sha256)`: checks the file exists and
  has a known format (`UsageError` otherwise) and hashes it (`file_sha256`, cached by path, size
  and mtime). The sha256, not the path, enters cell ids.
- `load_pretrained(model, file, pos_embed_resize="bilinear") -> LoadReport`: strict load into a
  timm `VisionTransformer` (plain or R50 hybrid, any image size, extra prefix tokens); the head
  is never loaded. `plan_load(state_dict_or_shapes, file, ...)` does the same checks without
  copying. `LoadReport` lists loaded / skipped / fgbench-initialised tensors and adaptations
  (`summary()` is one line); `pretrained_reports(model)` collects the ones `create_vit` left.
- `POS_EMBED_RESIZE`: ``bilinear`` (align_corners=True, the originals, default) or ``bicubic``
  (timm's default); `resize_grid(grid, new_grid, mode)` does the resampling.
- formats: Google ``.npz`` (ViT-B/16, B/32, R50+ViT-B/16 layouts), timm ``.pth`` / ``.pt`` /
  ``.bin`` / ``.safetensors`` state dicts (`READERS`).
"""

from methods.pretrained.digest import PretrainedFile, file_sha256
from methods.pretrained.formats import READERS, read_checkpoint
from methods.pretrained.loader import LoadReport, load_pretrained, plan_load, pretrained_reports
from methods.pretrained.pos_embed import POS_EMBED_RESIZE, check_resize_mode, resize_grid

__all__ = [
    "POS_EMBED_RESIZE",
    "READERS",
    "LoadReport",
    "PretrainedFile",
    "check_resize_mode",
    "file_sha256",
    "load_pretrained",
    "plan_load",
    "pretrained_reports",
    "read_checkpoint",
    "resize_grid",
]
