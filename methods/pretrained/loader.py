"""Load a local checkpoint into a timm ViT, strictly, and say what happened.

`plan_load` works on names and shapes only (so a `meta`-device model can be checked before a
matrix starts); `load_pretrained` applies the plan. Rules:

- every backbone tensor must come from the file, with the same shape after the position
  embedding / prefix-token fitting of `methods.pretrained.pos_embed`; otherwise a `UsageError`
  names the first offending key and both shapes;
- the classifier (``head.*``) is never loaded: the originals zero-initialise their own head;
- file entries the backbone has no place for (``pre_logits``, a 21k head, extra blocks) are
  skipped and listed in the `LoadReport`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from bench.errors import UsageError
from methods.pretrained.digest import PretrainedFile
from methods.pretrained.formats import read_checkpoint
from methods.pretrained.pos_embed import adapt_tokens, check_resize_mode

INITIALISED_HERE = ("head.",)  # fgbench initialises these itself, whatever the file holds


@dataclass
class LoadReport:
    path: str
    sha256: str
    format: str
    loaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    initialised: list[str] = field(default_factory=list)  # backbone tensors left at fgbench's init
    adapted: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """One line for the console."""
        def names(items: list[str], limit: int = 4) -> str:
            more = f", +{len(items) - limit} more" if len(items) > limit else ""
            return ", ".join(items[:limit]) + more

        parts = [f"pretrained {Path(self.path).name} (sha256 {self.sha256[:12]}, {self.format}): "
                 f"loaded {len(self.loaded)} tensors"]
        parts += [f"{key}: {note}" for key, note in self.adapted.items()]
        if self.skipped:
            parts.append(f"skipped {len(self.skipped)} ({names(self.skipped)})")
        if self.initialised:
            parts.append(f"initialised by fgbench: {names(self.initialised)}")
        return "; ".join(parts)


def _shape(t: Any) -> tuple[int, ...]:
    return tuple(t.shape)


def plan_load(target: Mapping[str, Any], file: PretrainedFile, pos_embed_resize: str = "bilinear"
              ) -> tuple[dict[str, torch.Tensor], LoadReport]:
    """(tensors to load, report) for a backbone whose state dict is `target` (shapes are enough)."""
    check_resize_mode(pos_embed_resize)
    ckpt = read_checkpoint(file.path)
    name = Path(file.path).name
    tensors = {k: v for k, v in ckpt.tensors.items() if not k.startswith(INITIALISED_HERE)}
    skipped = list(ckpt.unconverted) + sorted(k for k in ckpt.tensors if k.startswith(INITIALISED_HERE))
    adapted: dict[str, str] = {}
    if "pos_embed" in target and "pos_embed" in tensors:
        num_prefix = 1 + (_shape(target["reg_token"])[1] if "reg_token" in target else 0)
        grid = math.isqrt(_shape(target["pos_embed"])[1] - num_prefix)
        adapted = adapt_tokens(tensors, num_prefix, grid, pos_embed_resize, source=name)

    wanted = [k for k in target if not k.startswith(INITIALISED_HERE)]
    for key in wanted:
        if key in tensors and _shape(tensors[key]) != _shape(target[key]):
            raise UsageError(f"pretrained {name}: {key!r} has shape {_shape(tensors[key])} in the file but "
                             f"{_shape(target[key])} in this backbone; does the preset (patch size, width, "
                             f"depth) match the checkpoint?")
    missing = [k for k in wanted if k not in tensors]
    if missing:
        more = f" (+{len(missing) - 1} more)" if len(missing) > 1 else ""
        raise UsageError(f"pretrained {name}: the file has no {missing[0]!r}{more} that this backbone needs; "
                         f"does the preset (depth, hybrid stem) match the checkpoint?")
    skipped += sorted(k for k in tensors if k not in target)
    report = LoadReport(path=file.path, sha256=file.sha256, format=ckpt.format, loaded=wanted, skipped=skipped,
                        initialised=[k for k in target if k.startswith(INITIALISED_HERE)], adapted=adapted)
    return {k: tensors[k] for k in wanted}, report


def load_pretrained(model: nn.Module, file: PretrainedFile, pos_embed_resize: str = "bilinear") -> LoadReport:
    """Copy the checkpoint into `model` (a timm VisionTransformer); returns the report."""
    tensors, report = plan_load(model.state_dict(), file, pos_embed_resize)
    with torch.no_grad():
        result = model.load_state_dict(tensors, strict=False)
    if result.unexpected_keys or sorted(result.missing_keys) != sorted(report.initialised):
        raise RuntimeError(f"load_state_dict disagrees with the plan: missing {result.missing_keys}, "
                           f"unexpected {result.unexpected_keys}")
    return report


def pretrained_reports(model: nn.Module) -> list[LoadReport]:
    """The reports `methods.backbone.create_vit` left on the backbones inside `model`."""
    return [m.pretrained_report for m in model.modules() if isinstance(getattr(m, "pretrained_report", None), LoadReport)]
