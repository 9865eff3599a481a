"""`transfg`: TransFG's part selection module (He et al., AAAI 2022; github.com/TACJu/TransFG @ 9336fba).

The attention maps of blocks 0..L-2 are multiplied per head, later layers on the left, with no
head averaging, identity term or renormalisation: R = A^{L-2} ··· A^0. Row 0 of R without the
CLS column gives, per head, the patch the class token attends to most; those H patches (possibly
repeated) of block L-2's output follow its CLS into a new block (`part_layer`) and the final norm
(`part_norm`, from the checkpoint since `ff28b58`), and the head reads token 0. The loss is
cross-entropy plus a contrastive term on the L2-normalised class features (margin 0.4, divided
by B²). An overlapping patch embedding (kernel 16, stride `slide_step`) is optional
(T:models/modeling.py:144-157, 235-310, 364-375). `load_from` never touches `part_layer` or
`part_head` (and `zero_head` is never read, 290-297, 315-362), so both keep the values the seeded
constructor drew: `build` replays those draws (`methods.released_init`); `head_init=zero` zeroes
the head instead.

Two paths, chosen by the shared `attention` option (the blocks' mode):

- ``fused`` (fast): SDPA in the blocks; row 0 of R as a vector pushed through the layers, each
  map rebuilt from q, k in slices (`methods.attention.fast.rollout_row`, O(N²·d) per layer), one
  batched gather;
- ``eager`` (the released code's way, kept as the slow reference): explicit maps, the full
  N×N·N×N product (O(N³) per layer) and the per-sample Python gather loop.

Public: `part_indices(layers, statistics)`, `select_parts_fast` / `select_parts_reference`
(registry `PART_SELECTORS`), `contrastive_loss(features, labels, margin, divisor)`, `TransFGModel`.
"""

from __future__ import annotations

import dataclasses
from types import ModuleType
from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from bench.errors import UsageError
from methods.attention import AttentionCapture, LayerQK, fast, reference
from methods.attention.fast import compute_dtype
from methods.backbone import HEAD_INITS, BackboneConfig, create_vit, embed_tokens
from methods.base import MethodAdapter, method_output
from methods.ffvt import check_depth
from methods.last_block import renew_last_layers
from methods.registry import register_method
from methods.released_init import load_block_draws, released_draws, rewound_rng

# -------------------------------------------------------------------------------------- part selection


@torch.no_grad()
def part_indices(layers: Sequence[LayerQK], statistics: ModuleType = fast, prefix: int = 1) -> torch.Tensor:
    """Per head, the token (prefix tokens excluded) with the largest entry in row 0 of
    A_{n-1}···A_0: ``[B, H]`` indices into the full sequence (the `+ 1` of T:modeling.py:266)."""
    rollout = statistics.rollout_row(layers, 0)
    return rollout[:, :, prefix:].argmax(dim=-1) + prefix


def select_parts_fast(hidden: torch.Tensor, layers: Sequence[LayerQK], prefix: int = 1
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """[CLS; the H part tokens] ``[B, 1 + H, D]`` by one batched gather, and the indices ``[B, H]``."""
    idx = part_indices(layers, fast, prefix)
    rows = torch.arange(hidden.shape[0], device=hidden.device)[:, None]
    return torch.cat([hidden[:, :1], hidden[rows, idx]], dim=1), idx


def select_parts_reference(hidden: torch.Tensor, layers: Sequence[LayerQK], prefix: int = 1
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """The released code: full-product rollout, a Python loop over the samples, `stack` (T:modeling.py:262-272)."""
    idx = part_indices(layers, reference, prefix)
    parts = torch.stack([hidden[i, idx[i, :]] for i in range(hidden.shape[0])])
    return torch.cat([hidden[:, :1], parts], dim=1), idx


PartSelector = Callable[[torch.Tensor, Sequence[LayerQK], int], tuple[torch.Tensor, torch.Tensor]]
PART_SELECTORS: Mapping[str, PartSelector] = {"fused": select_parts_fast, "eager": select_parts_reference}

# ------------------------------------------------------------------------------------------------ loss

CONTRASTIVE_DIVISORS: Mapping[str, Callable[[int], int]] = {
    "batch_squared": lambda b: b * b,  # since ff28b58 "Fix contrastive loss scale"
    "batch": lambda b: b,  # the first commit
}


def contrastive_loss(features: torch.Tensor, labels: torch.Tensor, margin: float = 0.4,
                     divisor: str = "batch_squared") -> torch.Tensor:
    """TransFG's `con_loss`, in float32 or wider: with f the L2-normalised features and S = f fᵀ,
    [Σ_{same label} (1 - S_ij) + Σ_{different} max(S_ij - margin, 0)] / B² (the diagonal counts
    as same-label; it adds 0 up to rounding)."""
    with torch.autocast(device_type=features.device.type, enabled=False):
        f = F.normalize(features.to(compute_dtype(features)), dim=1)
        cos = f @ f.t()
        same = (labels[:, None] == labels[None, :]).float()
        loss = (same * (1 - cos)).sum() + ((1 - same) * (cos - margin).clamp_min(0)).sum()
        return loss / CONTRASTIVE_DIVISORS[divisor](features.shape[0])


# ------------------------------------------------------------------------------------------------ model


class TransFGModel(nn.Module):
    """A timm ViT whose blocks 0..L-2 feed the part selection; `vit.blocks[-1]`, `vit.norm` and
    `vit.head` play TransFG's `part_layer`, `part_norm` and `part_head`."""

    def __init__(self, vit: VisionTransformer, contrastive: bool = True, margin: float = 0.4,
                 divisor: str = "batch_squared", label_smoothing: float = 0.0):
        super().__init__()
        if len(vit.blocks) < 2:
            raise ValueError("TransFG needs at least 2 blocks (rollout layers plus the part layer)")
        self.vit = vit
        self.contrastive = contrastive
        self.margin = margin
        self.divisor = divisor
        self.label_smoothing = label_smoothing

    def parts(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The part layer's input ``[B, 1 + H, D]`` and the selected indices ``[B, H]``."""
        x = embed_tokens(self.vit, images)
        body = self.vit.blocks[:-1]
        with AttentionCapture(body) as capture:
            hidden = body(x)
        return PART_SELECTORS[capture.mode](hidden, capture.layers, self.vit.num_prefix_tokens)

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Class feature after the part layer and the part norm ``[B, D]``."""
        return self.vit.forward_head(self.vit.norm(self.vit.blocks[-1](tokens)), pre_logits=True)

    def forward(self, images: torch.Tensor, targets: torch.Tensor | None = None):
        features = self.encode(self.parts(images)[0])
        logits = self.vit.head(features)
        if targets is None:
            return method_output(logits)
        ce = F.cross_entropy(logits.to(compute_dtype(logits)), targets, label_smoothing=self.label_smoothing)
        if not self.contrastive:
            return method_output(logits, loss=ce, losses={"ce": ce})
        con = contrastive_loss(features, targets, self.margin, self.divisor)
        return method_output(logits, loss=ce + con, losses={"ce": ce, "contrastive": con})

    @torch.no_grad()
    def explain(self, images: torch.Tensor) -> dict:
        """The explain hook (`methods.explain`): the part token each head picked, and the logits."""
        tokens, idx = self.parts(images)
        return {"kind": "parts", "logits": self.vit.head(self.encode(tokens)), "parts": idx}


# ---------------------------------------------------------------------------------------------- adapter

SPLITS = ("non-overlap", "overlap")


@register_method
class TransFG(MethodAdapter):
    name = "transfg"
    summary = "attention-rollout part selection (one token per head) into a new part layer; CE + contrastive"
    reference = ("He et al., TransFG: A Transformer Architecture for Fine-grained Recognition, AAAI 2022; "
                 "github.com/TACJu/TransFG @ 9336fba")
    options = {
        "split": "non-overlap",  # or overlap: patch conv stride slide_step (the README's CUB command)
        "slide_step": 12,  # stride of the overlapping patch conv
        "contrastive": True,  # add con_loss to the cross-entropy
        "contrastive_margin": 0.4,
        "contrastive_divisor": "batch_squared",  # or batch (the first commit, before ff28b58)
        "load_final_norm": True,  # part_norm from the checkpoint's encoder_norm (since ff28b58)
        "pretrained_last_block": False,  # part_layer from the checkpoint's last block (never in the released code)
        "head_init": "torch",  # released: PyTorch's Linear init (load_from never touches part_head); zero
    }
    variants = {
        "overlap": {"split": "overlap"},  # the README's CUB command (--split overlap)
        "initial": {"contrastive_divisor": "batch", "load_final_norm": False},  # code before ff28b58
    }
    # T:train.py defaults: lr 3e-2, batch 16 per process, eval batch 8, 10000 steps, eval every 100;
    # scheduler.step() before optimizer.step(), so update s uses the multiplier of s + 1
    recipe = {"lr": 0.03, "batch_size": 16, "eval_batch_size": 8, "steps": 10000, "eval_every": 100,
              "lr_step_offset": 1}

    def check_options(self, options) -> None:
        problems = []
        if options["split"] not in SPLITS:
            problems.append(f"split must be one of {', '.join(SPLITS)} (got {options['split']!r})")
        step = options["slide_step"]
        if isinstance(step, bool) or not isinstance(step, int) or step < 1:
            problems.append(f"slide_step must be an integer >= 1 (got {step!r})")
        if options["contrastive_divisor"] not in CONTRASTIVE_DIVISORS:
            problems.append(f"contrastive_divisor must be one of {', '.join(CONTRASTIVE_DIVISORS)} "
                            f"(got {options['contrastive_divisor']!r})")
        if options["head_init"] not in HEAD_INITS:
            problems.append(f"head_init must be one of {', '.join(HEAD_INITS)} (got {options['head_init']!r})")
        if not -1.0 <= options["contrastive_margin"] <= 1.0:
            problems.append(f"contrastive_margin must be a cosine in [-1, 1] (got {options['contrastive_margin']})")
        if problems:
            raise UsageError("bad options for transfg: " + "; ".join(problems))

    def configure_backbone(self, backbone: BackboneConfig, options) -> BackboneConfig:
        check_depth(self.name, backbone)
        if options["split"] != "overlap":
            return backbone
        if options["slide_step"] > backbone.patch_size:
            raise UsageError(f"transfg: slide_step {options['slide_step']} is larger than the patch size "
                             f"{backbone.patch_size} (pixels would be skipped); use --opt slide_step=N with "
                             f"N <= {backbone.patch_size}")
        return dataclasses.replace(backbone, patch_stride=options["slide_step"])

    def build(self, num_classes: int, backbone: BackboneConfig, options, recipe) -> nn.Module:
        """timm's model, then the released constructor's draws replayed from the RNG state on entry:
        a seeded build gives `part_layer` and `part_head` the released code's values."""
        with rewound_rng():
            vit = create_vit(backbone, num_classes)
        part_layer, head = released_draws(vit, num_classes, new_block_first=False)
        renew_last_layers(vit, keep_last_block=options["pretrained_last_block"],
                          keep_final_norm=options["load_final_norm"],
                          fresh_block=lambda block: load_block_draws(block, part_layer))
        if options["head_init"] == "torch":
            vit.head.load_state_dict(head.state_dict())
        return TransFGModel(vit, options["contrastive"], options["contrastive_margin"],
                            options["contrastive_divisor"], label_smoothing=recipe.label_smoothing)
