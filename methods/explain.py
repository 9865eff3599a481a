"""The explain hook: what a method computed on some images, for `bench.py explain`'s figures.

A method's module may define ``explain(images) -> dict``; `explain` calls it in eval mode under
``no_grad`` (methods without one get `rollout_explanation`). The hook runs the method's own code
(its selection, its proposal, its predictor), never a re-implementation, and returns:

- ``"logits"``: ``[B, C]``, the headline logits (what the figure calls the prediction);
- ``"kind"``: which figure draws it (a key of `bench.report.explain_plots.DRAWERS`); a new method
  that returns an existing kind plugs in without touching the plotting code;
- the kind's tensors (B first; token indices are positions in the full sequence, prefix tokens
  included, so they map to pixels through `TokenGeometry`):
  - ``"rollout"``: ``heat`` ``[B, Gh, Gw]``, the class token's row of the attention rollout;
  - ``"maws"``: ``picks`` ``[B, layers, k]``, FFVT's MAWS picks of each layer;
  - ``"parts"``: ``parts`` ``[B, H]``, TransFG's part token of each head;
  - ``"mixing"``: ``positions`` ``[B, k]`` overwritten, ``sources`` ``[B]`` (the image whose
    tokens were written), ``source_positions`` ``[B, k]``, ``predicted`` ``[B, Gh, Gw]``
    (the substitution predictor's sigmoid per patch);
  - ``"dppm"``: ``scores`` and ``mask`` ``[B, Gh, Gw]``, ``boxes`` ``[B, 4]`` (inclusive pixel
    ``top, left, bottom, right``), ``zoomed`` ``[B, 3, S, S]`` (the second pass's input),
    ``global`` and ``local`` logits;
- ``"geometry"``: a `TokenGeometry` (added from the model's timm ViT when the hook leaves it out).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from bench.errors import UsageError
from methods.attention import AttentionCapture, LayerQK, fast


@dataclass(frozen=True)
class TokenGeometry:
    """Where the tokens of a ViT sit in the input image.

    Patch token (r, c) (sequence position ``prefix + r·Gw + c``) sees the input pixels rows
    ``[r·stride, r·stride + patch)`` and columns ``[c·stride, c·stride + patch)``: with
    overlapping patches (TransFG's stride 12 at patch 16) neighbouring tokens share pixels.
    """

    img_size: int
    patch: int
    stride: int
    grid: tuple[int, int]
    prefix: int

    @classmethod
    def of(cls, vit: VisionTransformer) -> "TokenGeometry":
        embed = vit.patch_embed
        grid = tuple(int(g) for g in embed.grid_size)
        img = int(embed.img_size[0]) if isinstance(embed.img_size, (tuple, list)) else int(embed.img_size)
        stride = int(getattr(embed, "stride", 0) or 0)
        if stride:  # overlapping patches: the convolution's kernel and stride
            patch = int(embed.patch_size[0])
        else:  # non-overlapping (linear or hybrid stem): each token covers img / grid pixels
            patch = stride = img // grid[0]
        return cls(img, patch, stride, grid, int(vit.num_prefix_tokens))

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    def cell(self, token: int) -> tuple[int, int]:
        """Grid (row, column) of sequence position `token`; prefix tokens have none."""
        index = int(token) - self.prefix
        if not 0 <= index < self.num_patches:
            raise ValueError(f"token {token} is not a patch token (prefix {self.prefix}, {self.num_patches} patches)")
        return divmod(index, self.grid[1])

    def token_rect(self, token: int) -> tuple[int, int, int, int]:
        """Pixel rectangle ``(top, left, bottom, right)``, ends exclusive, that token `token` sees."""
        row, col = self.cell(token)
        top, left = row * self.stride, col * self.stride
        return top, left, top + self.patch, left + self.patch


def vit_of(model: nn.Module) -> VisionTransformer:
    vit = getattr(model, "vit", None)
    if not isinstance(vit, VisionTransformer):
        raise UsageError(f"{type(model).__name__} has no explain() hook and no timm ViT at .vit to take an "
                         "attention rollout from")
    return vit


@torch.no_grad()
def class_token_rollout(layers: list[LayerQK], token: int = 0) -> torch.Tensor:
    """Row `token` of Â_{L-1}···Â_0 with Â = 0.5·(mean_h A + I) (Abnar & Zuidema's rollout): ``[B, N]``.

    A row vector pushed through the layers, last first; v·mean_h(A) is the head mean of the
    toolkit's `row_times_attention` (the eager blocks' own maps when they were recorded).
    """
    B, H, N, _ = layers[0].q.shape
    v = torch.zeros(B, N, dtype=torch.promote_types(layers[0].q.dtype, torch.float32), device=layers[0].q.device)
    v[:, token] = 1.0
    for layer in reversed(layers):
        if layer.probs is not None:
            pushed = (v[:, None, None, :].to(layer.probs.dtype) @ layer.probs).squeeze(-2).mean(dim=1).to(v.dtype)
        else:
            pushed = fast.row_times_attention(v[:, None].expand(B, H, N), layer).mean(dim=1).to(v.dtype)
        v = 0.5 * pushed + 0.5 * v
    return v


@torch.no_grad()
def rollout_explanation(model: nn.Module, images: torch.Tensor) -> dict[str, Any]:
    """The default hook: the model's own forward, with the class token's rollout over all its blocks."""
    vit = vit_of(model)
    geometry = TokenGeometry.of(vit)
    with AttentionCapture(vit.blocks) as capture:
        out = model(images)
    rollout = class_token_rollout(capture.layers)
    if rollout.shape[1] != geometry.prefix + geometry.num_patches:
        raise UsageError(f"{type(model).__name__}: its blocks see {rollout.shape[1]} tokens, not the "
                         f"{geometry.prefix} + {geometry.num_patches} of the patch grid; give it an explain() hook")
    heat = rollout[:, geometry.prefix:].reshape(-1, *geometry.grid)
    return {"kind": "rollout", "logits": out["logits"], "heat": heat, "geometry": geometry}


@torch.no_grad()
def explain(model: nn.Module, images: torch.Tensor) -> dict[str, Any]:
    """What `model` computed on `images` (normalised network input ``[B, 3, S, S]``): see the module docstring."""
    was_training = model.training
    model.eval()
    try:
        hook = getattr(model, "explain", None)
        result = dict(hook(images)) if callable(hook) else rollout_explanation(model, images)
    finally:
        model.train(was_training)
    if "geometry" not in result:
        result["geometry"] = TokenGeometry.of(vit_of(model))
    for key in ("kind", "logits"):
        if key not in result:
            raise ValueError(f"{type(model).__name__}.explain() returned no {key!r}")
    return result
