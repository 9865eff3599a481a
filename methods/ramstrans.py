"""`ramstrans`: RAMS-Trans, attention-guided crop-and-zoom with a second class token
(Hu et al., ACM MM 2021, arXiv:2107.08192; code github.com/hyqyoung/RAMS-Trans @ c414ea9).

One backbone with two class tokens ``[cls1, cls2, patches]`` (the second starts as a copy of the
first, its position entry too) runs twice per image, with the same weights:

1. pass 1 on the image, logits from token 0 ("global"); its attention feeds the DPPM
   (`methods.dppm`), which proposes one box per image;
2. the box is cropped from the network input and zoomed back to the input size (bilinear,
   ``align_corners=True``), detached; pass 2 on it, logits from token 1 ("local"), same head.

Loss: the released code trains on CE(global) only and runs pass 2 without using it (here under
``no_grad``); the paper sums CE(global) + λ·CE(local) (option ``local_weight``). Evaluation returns
the global, local and summed logits as views; the headline is the option ``eval_logits``.

The attention option picks the DPPM implementation with the blocks' mode: ``fused`` (default)
computes the scores from the q/k the fused blocks used, components and boxes batched on the device
and crops all images in one `grid_sample`; ``eager`` is the released code's way (explicit maps,
full rollout products, a per-image CPU loop with scipy labelling, a per-image interpolate).

Public maths: `patch_boxes(scores, alpha, patch)` (re-exported from `methods.dppm`),
`crop_zoom(x, boxes, size)` (fast) and `crop_zoom_reference(x, boxes, size)` (per-image loop).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from bench.errors import UsageError
from methods.attention import AttentionCapture
from methods.attention.fast import wide
from methods.backbone import HEAD_INITS, BackboneConfig, create_vit
from methods.base import MethodAdapter, method_output
from methods.dppm import BOX_OFFSETS, grid_scores, patch_boxes, patch_boxes_reference, threshold_mask
from methods.registry import register_method

__all__ = ["RAMSTrans", "RAMSTransModel", "crop_zoom", "crop_zoom_reference", "patch_boxes"]

EVAL_LOGITS = ("global", "local", "sum")


# ------------------------------------------------------------------------------- crop and zoom


def crop_zoom(x: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Crop inclusive pixel boxes ``[B, 4]`` ``(top, left, bottom, right)`` from ``[B, C, H, W]`` and
    resize each to ``size × size``, bilinear with ``align_corners=True``: one `grid_sample` call.

    Output pixel (i, j) samples source row ``top + i·(bottom - top)/(size - 1)`` and column
    ``left + j·(right - left)/(size - 1)``, what `F.interpolate(align_corners=True)` does on the
    slice ``x[:, :, top:bottom+1, left:right+1]``. Coordinates are computed in float64 from the
    integer boxes and sampled in float32 or wider (16-bit images are cast back afterwards); a
    whole-image box at ``size == H == W`` returns the input exactly, as interpolate does.
    """
    B, _, H, W = x.shape
    if size < 2 or H < 2 or W < 2:
        raise ValueError(f"crop_zoom needs images and output of at least 2x2 pixels (image {H}x{W}, size {size})")
    if boxes.shape != (B, 4):
        raise ValueError(f"boxes must be [{B}, 4], got {tuple(boxes.shape)}")
    b = boxes.to(device=x.device, dtype=torch.float64)
    steps = torch.arange(size, device=x.device, dtype=torch.float64)
    rows = b[:, :1] + steps * ((b[:, 2:3] - b[:, :1]) / (size - 1))  # [B, S] source rows
    cols = b[:, 1:2] + steps * ((b[:, 3:4] - b[:, 1:2]) / (size - 1))
    work = torch.promote_types(x.dtype, torch.float32)  # a 16-bit grid would be off by pixels at 448
    gy, gx = (2 * rows / (H - 1) - 1).to(work), (2 * cols / (W - 1) - 1).to(work)
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)  # [B, S, S, (x, y)]
    zoomed = F.grid_sample(x.to(work), grid, mode="bilinear", padding_mode="border", align_corners=True).to(x.dtype)
    if size == H == W:
        whole = (boxes[:, 0] == 0) & (boxes[:, 1] == 0) & (boxes[:, 2] == H - 1) & (boxes[:, 3] == W - 1)
        identity = whole.to(x.device)  # compared with scalars: no host-to-device copy
        zoomed = torch.where(identity[:, None, None, None], x, zoomed)
    return zoomed


def crop_zoom_reference(x: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """`crop_zoom` the released code's way: per image, slice then `F.interpolate`, into a zero buffer."""
    out = x.new_zeros(x.shape[0], x.shape[1], size, size)
    for b, (top, left, bottom, right) in enumerate(boxes.tolist()):
        crop = x[b:b + 1, :, top:bottom + 1, left:right + 1]
        out[b] = F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=True)[0]
    return out


# ------------------------------------------------------------------------------------- model


class RAMSTransModel(nn.Module):
    """Two passes of one timm ViT (with one extra prefix token) around the DPPM crop."""

    def __init__(self, vit: nn.Module, patch: int, alpha: float = 1.2, local_weight: float = 0.0,
                 eval_logits: str = "global", box_offset: str = "released", label_smoothing: float = 0.0):
        super().__init__()
        self.vit = vit
        self.patch = patch
        self.alpha = alpha
        self.local_weight = local_weight
        self.eval_logits = eval_logits
        self.box_offset = box_offset
        self.label_smoothing = label_smoothing

    @property
    def grid(self) -> tuple[int, int]:
        return tuple(self.vit.patch_embed.grid_size)

    def readout(self, tokens: torch.Tensor, index: int) -> torch.Tensor:
        """Logits of prefix token `index` of the final-norm tokens (token 0: global, 1: local)."""
        vit = self.vit
        return vit.head(vit.head_drop(vit.fc_norm(tokens[:, index])))

    def propose(self, capture: AttentionCapture) -> torch.Tensor:
        """Pass-1 attention -> ``[B, 4]`` pixel boxes, by the blocks' attention mode."""
        rollout = capture.statistics.residual_rollout_column_mean(capture.layers)  # full products when eager
        scores = grid_scores(rollout, self.vit.num_prefix_tokens, self.grid)
        boxes = patch_boxes_reference if capture.mode == "eager" else patch_boxes  # released: per-image CPU loop
        return boxes(scores, self.alpha, self.patch, self.box_offset)

    def zoom(self, images: torch.Tensor, boxes: torch.Tensor, mode: str) -> torch.Tensor:
        crop = crop_zoom_reference if mode == "eager" else crop_zoom
        return crop(images.detach(), boxes, images.shape[-1])

    def scales(self, images: torch.Tensor, local_grad: bool = True) -> dict[str, torch.Tensor]:
        """Both passes: ``{"global", "local"}`` logits, the ``boxes`` and the ``zoomed`` inputs.

        local_grad: build the autograd graph of pass 2 (False: pass 2 under no_grad)."""
        if images.shape[-1] != images.shape[-2]:
            raise ValueError(f"RAMS-Trans zooms back to a square input, got {tuple(images.shape[-2:])}")
        with AttentionCapture(self.vit.blocks) as capture:
            tokens = self.vit.forward_features(images)
        global_logits = self.readout(tokens, 0)
        boxes = self.propose(capture)
        zoomed = self.zoom(images, boxes, capture.mode)
        with torch.set_grad_enabled(local_grad and torch.is_grad_enabled()):
            local_logits = self.readout(self.vit.forward_features(zoomed), 1)
        return {"global": global_logits, "local": local_logits, "boxes": boxes, "zoomed": zoomed}

    def forward(self, images: torch.Tensor, targets: torch.Tensor | None = None):
        out = self.scales(images, local_grad=self.local_weight > 0)
        views = {"global": out["global"], "local": out["local"], "sum": out["global"] + out["local"]}
        logits = views[self.eval_logits]
        if targets is None:
            return method_output(logits, views=views)
        ce = F.cross_entropy(wide(out["global"]), targets, label_smoothing=self.label_smoothing)
        losses = {"ce": ce}
        if self.local_weight > 0:
            local = F.cross_entropy(wide(out["local"]), targets, label_smoothing=self.label_smoothing)
            losses["ce_local"] = self.local_weight * local
        return method_output(logits, loss=sum(losses.values()), losses=losses, views=views)

    @torch.no_grad()
    def explain(self, images: torch.Tensor) -> dict:
        """The explain hook (`methods.explain`): both passes as `scales` runs them (box, zoomed input,
        global and local logits) and pass 1's DPPM scores and mask."""
        out = self.scales(images, local_grad=False)
        with AttentionCapture(self.vit.blocks) as capture:
            self.vit.forward_features(images)
        scores = grid_scores(capture.statistics.residual_rollout_column_mean(capture.layers),
                             self.vit.num_prefix_tokens, self.grid)
        views = {"global": out["global"], "local": out["local"], "sum": out["global"] + out["local"]}
        return {"kind": "dppm", "logits": views[self.eval_logits], "scores": scores,
                "mask": threshold_mask(scores, self.alpha), "boxes": out["boxes"], "zoomed": out["zoomed"],
                "global": out["global"], "local": out["local"]}


# ----------------------------------------------------------------------------------- adapter


def tie_second_class_token(vit: nn.Module) -> None:
    """RAMS-Trans' init of the second class token: a copy of the first, position entry included
    (what its `load_from` does; applied to random initialisation as well)."""
    with torch.no_grad():
        vit.reg_token.copy_(vit.cls_token)
        vit.pos_embed[:, 1].copy_(vit.pos_embed[:, 0])


def reset_final_norm(vit: nn.Module) -> None:
    """The released `load_from` never copies the encoder's final LayerNorm: it starts at (1, 0)."""
    vit.norm.reset_parameters()
    report = getattr(vit, "pretrained_report", None)
    if report is not None:
        moved = [k for k in report.loaded if k.startswith("norm.")]
        report.loaded = [k for k in report.loaded if k not in moved]
        report.initialised.extend(moved)
        report.adapted["norm"] = "final LayerNorm reset to (1, 0), not loaded (RAMS-Trans load_from)"


@register_method
class RAMSTrans(MethodAdapter):
    name = "ramstrans"
    summary = "RAMS-Trans: rollout-guided box (DPPM), crop-and-zoom second pass, second class token"
    reference = ("Hu et al., RAMS-Trans: Recurrent Attention Multi-scale Transformer for Fine-grained Image "
                 "Recognition, ACM MM 2021; github.com/hyqyoung/RAMS-Trans @ c414ea9")
    options = {
        "alpha": 1.2,  # mask = score > alpha * mean(score)
        "local_weight": 0.0,  # lambda on CE(local); 0 = released (global CE only, pass 2 under no_grad)
        "eval_logits": "global",  # headline: global | local | sum (all three are recorded as views)
        "box_offset": "released",  # released: top = P*r0 - 1 (off by one); exact: P*r0
        "patch_size": 0,  # 0 = the preset's; 32 = the released configuration (variant b32)
        "load_final_norm": False,  # released: the final LayerNorm is not loaded from the checkpoint
        "head_init": "torch",  # released: PyTorch's Linear init; zero: the shared backbone's zero head
    }
    variants = {
        "paper": {"local_weight": 1.0, "eval_logits": "local"},  # CE global + CE local; local branch at test
        "b32": {"patch_size": 32},  # the released configuration: patch 32 (ViT-B/32 weights) at 448
        "eager": {"attention": "eager"},  # the released DPPM path, for side-by-side speed figures
    }
    # src/trainer_rams.py + config.py (write-up §3.1); the cards set the per-dataset values
    recipe = {"img_size": 448, "resize_size": 600, "batch_size": 16, "eval_batch_size": 16, "optimizer": "sgd",
              "lr": 0.03, "momentum": 0.9, "weight_decay": 0.0, "warmup_steps": 500, "schedule": "cosine",
              "steps": 10000, "clip_grad": 1.0, "color_jitter": 0.0, "label_smoothing": 0.0}

    def check_options(self, options: Mapping[str, Any]) -> None:
        problems = []
        if not options["alpha"] > 0:
            problems.append(f"alpha must be > 0 (got {options['alpha']})")
        if options["local_weight"] < 0:
            problems.append(f"local_weight must be >= 0 (got {options['local_weight']})")
        if options["eval_logits"] not in EVAL_LOGITS:
            problems.append(f"eval_logits must be one of {', '.join(EVAL_LOGITS)} (got {options['eval_logits']!r})")
        if options["box_offset"] not in BOX_OFFSETS:
            problems.append(f"box_offset must be one of {', '.join(BOX_OFFSETS)} (got {options['box_offset']!r})")
        if isinstance(options["patch_size"], bool) or not isinstance(options["patch_size"], int) \
                or options["patch_size"] < 0:
            problems.append(f"patch_size must be an integer >= 0, 0 = the preset's (got {options['patch_size']!r})")
        if options["head_init"] not in HEAD_INITS:
            problems.append(f"head_init must be one of {', '.join(HEAD_INITS)} (got {options['head_init']!r})")
        if problems:
            raise UsageError(f"bad options for {self.name}: " + "; ".join(problems))

    def configure_backbone(self, backbone: BackboneConfig, options: Mapping[str, Any]) -> BackboneConfig:
        """The second class token, and the patch size of the variant if it sets one."""
        return dataclasses.replace(backbone, extra_tokens=1, patch_size=options["patch_size"] or backbone.patch_size)

    def check_backbone(self, backbone: BackboneConfig) -> None:
        if backbone.extra_tokens != 1:
            raise UsageError(f"ramstrans needs exactly one extra prefix token, got {backbone.extra_tokens}")
        if backbone.grid_size < 2:
            raise UsageError(f"ramstrans needs a patch grid of at least 2x2 to propose a box; img_size "
                             f"{backbone.img_size} with patch {backbone.patch_size} gives {backbone.grid_size}x"
                             f"{backbone.grid_size} (use a smaller patch_size or a larger img_size)")

    def build(self, num_classes: int, backbone: BackboneConfig, options, recipe) -> nn.Module:
        vit = create_vit(backbone, num_classes)
        tie_second_class_token(vit)
        if not options["load_final_norm"]:
            reset_final_norm(vit)
        if options["head_init"] == "torch":
            vit.head.reset_parameters()
        return RAMSTransModel(vit, backbone.patch_size, alpha=options["alpha"], local_weight=options["local_weight"],
                              eval_logits=options["eval_logits"], box_offset=options["box_offset"],
                              label_smoothing=recipe.label_smoothing)
