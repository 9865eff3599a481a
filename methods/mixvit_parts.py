"""`mixvit_parts`: Mix-ViT's part model, what the released UFG scripts train (write-up §2.3; MixViT
models/make_model.py, models/modeling.py, train.py at 1be7032).

A BiT ResNetV2 stem (R50+ViT-B/16's three stages, stride 16) gives a feature map; a `GroupingUnit`
pools it into K = 5 part vectors; the hybrid ViT's 1x1 projection embeds them as K tokens; the class
token and K part tokens, with their own position table, go through only the checkpoint's first two
blocks and its final norm. Mixing happens at the input of the last block as in `mixvit`, with two
differences: the selection is the *last* block's CLS-row attention (head mean) over all K + 1
tokens, class token included (no rollout, no contribution term), so k = int(ratio · (K + 1)) = 1
at the scripts' 0.2; and the mixed class token also feeds a second classifier.

loss = CE + 0.5 · shaping + mask_cls_weight · CE(mixed class token) + mask_weight · BCE.

Built on the `base_r50` preset's hybrid backbone, whose ResNetV2 is the original's (the jeonsworld
port: PyTorch padding, a 111 x 111 map after the max-pool at 448 px; `methods.resnet_stem`;
`base_r50_timm` runs timm's TF-"same" stem instead); on a preset without a hybrid stem the adapter
adds the R50 stages that match its patch size ((3,) for 4, (3, 4) for 8, (3, 4, 9) for 16), with
the backbone's `hybrid_stem` (released by default).
Differences from the released code: the mask branch runs in training only (the original also runs
it at evaluation, drawing partners, and hangs on an evaluation batch of 1); the substitution head
(`mask_head_width=grid+1`) is the run's patch grid + 1 wide, 785 at the scripts' 448 px, where the
original's is 785 at any image size (its ViT is built for 448 px whatever `--img_size` says), so at
other sizes the BCE averages over another number of columns; the optimizer groups of the original
(stem x1, grouping x5, transformer x10, heads x20 the lr) are the option `module_lr`.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from bench.errors import UsageError
from methods.attention import AttentionCapture
from methods.attention.fast import wide
from methods.backbone import BackboneConfig, create_vit
from methods.base import MethodAdapter, method_output
from methods.grouping import GroupingUnit, ShapingLoss
from methods.mixvit import (
    DATASET_OPTIONS,
    REFERENCE,
    MaskBranch,
    check_mixing_options,
    draw_partners,
    multi_hot,
    num_selected,
    select_tokens,
    substitute_positions,
)
from methods.pretrained import read_checkpoint
from methods.registry import register_method

BIT_R50_STAGES = (3, 4, 9)  # R50+ViT-B/16's ResNetV2 (stride 16 after three stages)
MASK_HEAD_WIDTHS = ("grid+1", "tokens")
# lr multipliers of the released optimizer groups (R/train.py:200-206), by parameter-name prefix;
# everything else (part embedding, class token, positions, blocks, norms, mask block) is x10
MODULE_LR = (("vit.patch_embed.backbone.", 1.0), ("grouping.", 5.0), ("vit.head.", 20.0), ("mask.head.", 20.0),
             ("mask_cls_head.", 20.0))
TRANSFORMER_LR = 10.0


def stem_stages(patch_size: int) -> tuple[int, ...]:
    """The R50 stages whose stride is `patch_size` (stem /4, then /2 per further stage)."""
    count = {4: 1, 8: 2, 16: 3}.get(patch_size)
    if count is None:
        raise UsageError(f"mixvit_parts needs a patch size of 4, 8 or 16 for its ResNet stem (got {patch_size})")
    return BIT_R50_STAGES[:count]


def part_positions(pos_embed: torch.Tensor, num_parts: int) -> torch.Tensor:
    """``[1, 1 + K, D]``: the class entry, then the square position grid resized to K x 1 (bilinear,
    align_corners False), as the original's `load_from` (R/modeling.py:508-514)."""
    grid = math.isqrt(pos_embed.shape[1] - 1)
    cells = pos_embed[:, 1:].reshape(1, grid, grid, -1).permute(0, 3, 1, 2).double()
    resized = F.interpolate(cells, size=(num_parts, 1), mode="bilinear", align_corners=False)
    return torch.cat([pos_embed[:, :1].double(), resized.permute(0, 2, 3, 1).reshape(1, num_parts, -1)], dim=1)


class MixViTParts(nn.Module):
    def __init__(self, vit: VisionTransformer, num_classes: int, num_parts: int = 5, mask_topk: float = 0.2,
                 mask_weight: float = 1.0, mask_cls_weight: float = 1.0, shaping_weight: float = 0.5,
                 chained: bool = True, mask_head_width: str = "grid+1", module_lr: bool = True,
                 label_smoothing: float = 0.0, position_source: torch.Tensor | None = None):
        super().__init__()
        self.vit = vit
        self.grouping = GroupingUnit(vit.patch_embed.proj.in_channels, num_parts)
        source = vit.pos_embed.detach() if position_source is None else position_source
        vit.pos_embed = nn.Parameter(part_positions(source, num_parts).to(vit.pos_embed.dtype))
        tokens = num_parts + 1
        self.num_selected = num_selected(mask_topk, tokens)
        width = vit.patch_embed.num_patches + 1 if mask_head_width == "grid+1" else tokens
        self.mask = MaskBranch(vit.blocks[-1], vit.embed_dim, width)
        self.mask_cls_head = nn.Linear(vit.embed_dim, num_classes)
        self.shaping = ShapingLoss(radius=2, std=0.4, alpha=1.0, beta=0.001)
        self.mask_weight, self.mask_cls_weight, self.shaping_weight = mask_weight, mask_cls_weight, shaping_weight
        self.chained, self.module_lr, self.label_smoothing = chained, module_lr, label_smoothing

    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images -> (tokens ``[B, 1 + K, D]`` entering the first block, assignment ``[B, K, h, w]``)."""
        features = self.vit.patch_embed.backbone(images)
        if isinstance(features, (list, tuple)):
            features = features[-1]
        parts, assign = self.grouping(features)  # [B, C, K]: a K x 1 "image" for the 1x1 projection
        tokens = self.vit.patch_embed.proj(parts.unsqueeze(-1).to(features.dtype)).flatten(2).transpose(1, 2)
        cls = self.vit.cls_token.expand(tokens.shape[0], -1, -1)
        x = torch.cat([cls, tokens], dim=1) + self.vit.pos_embed
        return self.vit.norm_pre(self.vit.pos_drop(x)), assign

    def forward(self, images: torch.Tensor, targets: torch.Tensor | None = None):
        x, assign = self.embed(images)
        mixing = self.training and targets is not None
        if mixing:
            with AttentionCapture(self.vit.blocks[-1:]) as capture:
                hidden = self.vit.blocks[:-1](x)
                x = self.vit.blocks[-1](hidden)
        else:
            x = self.vit.blocks(x)
        logits = self.vit.forward_head(self.vit.norm(x))
        if targets is None:
            return method_output(logits)
        ce = F.cross_entropy(wide(logits), targets, label_smoothing=self.label_smoothing)
        if not mixing:
            return method_output(logits, loss=ce, losses={"ce": ce})
        bce, mask_ce = self.mixing_losses(hidden, capture, targets)
        losses = {"ce": ce, "shaping": self.shaping_weight * self.shaping(assign),
                  "mask_ce": self.mask_cls_weight * mask_ce, "bce": self.mask_weight * bce}
        return method_output(logits, loss=sum(losses.values()), losses=losses)

    def mixing_losses(self, hidden: torch.Tensor, capture: AttentionCapture,
                      targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(BCE of the substitution head, CE of the mixed class token); zeros without mixing (B = 1)."""
        if hidden.shape[0] < 2:
            zero = self.mask.untouched() + sum(p.sum() for p in self.mask_cls_head.parameters()) * 0.0
            return zero, zero
        scores = capture.statistics.cls_row_softmax(capture.layers[0], 0).mean(dim=1)  # [B, 1 + K]
        idx = select_tokens(scores, self.num_selected)  # sequence positions, class token included
        mixed = substitute_positions(hidden, idx, draw_partners(hidden.shape[0]), self.chained)
        features = self.mask.features(mixed)
        mask_logits = wide(self.mask.head(features))
        bce = F.binary_cross_entropy_with_logits(mask_logits, multi_hot(idx, mask_logits.shape[1], mask_logits.dtype))
        mask_ce = F.cross_entropy(wide(self.mask_cls_head(features)), targets, label_smoothing=self.label_smoothing)
        return bce, mask_ce


# ------------------------------------------------------------------------------------------ adapter


@register_method
class MixViTPartsAdapter(MethodAdapter):
    name = "mixvit_parts"
    family = "mixvit"  # the cards' Mix-ViT recipes are its UFG scripts' (CUB, SoyGlobal: the ViT scripts')
    summary = "Mix-ViT part model: R50 stem, 5 grouped part tokens, 2 blocks, token mixing (the UFG scripts)"
    reference = REFERENCE
    in_all = False  # a ResNet stem per image: several times the tiny ViT's cost, beyond the demo budget
    options = {
        "num_parts": 5,
        "depth": 2,  # transformer blocks (the checkpoint's first ones)
        "mask_topk": 0.2,  # k = int(ratio * (parts + 1)); the scripts pass 0.2 (argparse default 0.05)
        "mask_weight": 1.0,
        "mask_cls_weight": 1.0,  # CE of the mixed class token
        "shaping_weight": 0.5,
        "chained": True,  # sequential in-place substitution (released code)
        "mask_head_width": "grid+1",  # substitution head width: image grid + 1 (released code) or tokens
        "module_lr": True,  # the released per-module lr multipliers (x1 stem, x5 grouping, x10, x20 heads)
    }
    variants = {"clean": {"chained": False, "mask_head_width": "tokens"}}
    dataset_options = {**DATASET_OPTIONS, "soyageing_r1": {**DATASET_OPTIONS["soyageing_r1"], "mask_cls_weight": 0.0}}

    def check_options(self, options: Mapping[str, Any]) -> None:
        problems = check_mixing_options(options)
        for key in ("num_parts", "depth"):
            if isinstance(options[key], bool) or not isinstance(options[key], int) or options[key] < 1:
                problems.append(f"{key} must be an integer >= 1 (got {options[key]!r})")
        for key in ("mask_cls_weight", "shaping_weight"):
            if options[key] < 0:
                problems.append(f"{key} must be >= 0 (got {options[key]})")
        if options["mask_head_width"] not in MASK_HEAD_WIDTHS:
            problems.append(f"mask_head_width must be one of {', '.join(MASK_HEAD_WIDTHS)} "
                            f"(got {options['mask_head_width']!r})")
        if problems:
            raise UsageError(f"bad options for {self.name}: " + "; ".join(problems))

    def configure_backbone(self, backbone: BackboneConfig, options: Mapping[str, Any]) -> BackboneConfig:
        stages = backbone.hybrid_layers or stem_stages(backbone.patch_size)
        backbone = replace(backbone, depth=options["depth"], hybrid_layers=stages)
        if options["mask_head_width"] == "grid+1" and options["num_parts"] > backbone.num_patches:
            raise UsageError(f"{self.name}: num_parts={options['num_parts']} exceeds the {backbone.num_patches} "
                             f"patches that size the substitution head (mask_head_width=grid+1); use fewer "
                             f"parts, a larger image, or mask_head_width=tokens")
        return backbone

    def check_backbone(self, backbone: BackboneConfig) -> None:
        if backbone.extra_tokens:
            raise UsageError(f"{self.name} needs a backbone without extra prefix tokens (got {backbone.extra_tokens})")
        if backbone.pretrained and backbone.pos_embed_resize != "bilinear":
            raise UsageError(f"{self.name} resizes the checkpoint's position grid to its part positions the "
                             f"original's way (bilinear, align_corners=False); --pos-embed-resize "
                             f"{backbone.pos_embed_resize} does not apply to it, leave it at bilinear")
        if backbone.grid_size < 5:
            raise UsageError(f"{self.name}'s shaping loss blurs the {backbone.grid_size}x{backbone.grid_size} part "
                             f"maps with a 5x5 kernel without padding: use an image size of at least "
                             f"{5 * backbone.patch_size}")

    def build(self, num_classes: int, backbone: BackboneConfig, options, recipe) -> nn.Module:
        vit = create_vit(backbone, num_classes)
        source = read_checkpoint(backbone.pretrained.path).tensors["pos_embed"] if backbone.pretrained else None
        model = MixViTParts(vit, num_classes, num_parts=options["num_parts"], mask_topk=options["mask_topk"],
                            mask_weight=options["mask_weight"], mask_cls_weight=options["mask_cls_weight"],
                            shaping_weight=options["shaping_weight"], chained=options["chained"],
                            mask_head_width=options["mask_head_width"], module_lr=options["module_lr"],
                            label_smoothing=recipe.label_smoothing, position_source=source)
        report = getattr(vit, "pretrained_report", None)
        if report is not None and source is not None:  # the records say what the model really starts from
            grid = math.isqrt(source.shape[1] - 1)
            report.adapted["pos_embed grid"] = (f"{grid}x{grid} -> {options['num_parts']}x1 part positions "
                                                f"(bilinear, align_corners=False; Mix-ViT load_from)")
        return model

    def param_groups(self, model: nn.Module, recipe):
        """One group (`module_lr` false) or the original's five lr multipliers; weight decay on all."""
        if not model.module_lr:
            return super().param_groups(model, recipe)
        groups: dict[float, list[nn.Parameter]] = {}
        for name, p in model.named_parameters():
            if p.requires_grad:
                scale = next((s for prefix, s in MODULE_LR if name.startswith(prefix)), TRANSFORMER_LR)
                groups.setdefault(scale, []).append(p)
        return [{"params": params, "lr_scale": scale} for scale, params in sorted(groups.items())]
