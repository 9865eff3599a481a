"""`ffvt`: FFVT, feature fusion vision transformer (Wang et al., BMVC 2021; github.com/Markin-Wang/FFVT @ 9e44d1b).

After each block l = 0..L-2, mutual attention weight selection (MAWS) scores every token t, the
class token included, by m_t = mean_h A[0, t] · mean_h C[t, 0]: A is the attention softmax over
keys (how much CLS attends to t), C the softmax of the same scores over queries (how much t
attends to CLS, normalised over tokens). The k best tokens of block l's *output* are kept. The
fused sequence [CLS of block L-2; layer-0 picks; ...; layer-(L-2) picks] (1 + (L-1)·k tokens, in
layer order, best first within a layer) goes through a new last block and a new LayerNorm, and
the head reads token 0 (F:models/modeling.py:259-321, 355). The new block starts from the values
the released constructor draws for `ff_last_layer` from the seeded RNG (`methods.released_init`);
the head starts at zero, as the released `zero_head=True` (F:models/modeling.py:372-374).

Two paths, chosen by the shared `attention` option (the blocks' mode):

- ``fused`` (fast): SDPA in the blocks; the scores from the CLS row and column of q kᵀ only
  (O(N·d) per layer, `methods.attention.fast`, no_grad, float32 or wider), `topk`, one batched
  gather per layer;
- ``eager`` (the released code's way, kept as the slow reference): explicit maps, the second
  softmax over the whole matrix for one column, `argsort` over all tokens and the per-sample
  Python gather loop.

Both give the same logits and gradients: the selection carries no gradient in either.

Public: `maws_scores(q, k)`, `maws_select(q, k, num_tokens)`, `mutual_attention(layer,
statistics)`, `fuse_fast` / `fuse_reference` (registry `FUSERS`), `FFVTModel`.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from bench.errors import UsageError
from methods.attention import AttentionCapture, LayerQK, fast, reference
from methods.attention.fast import compute_dtype
from methods.backbone import BackboneConfig, create_vit, embed_tokens
from methods.base import MethodAdapter, method_output
from methods.last_block import renew_last_layers
from methods.registry import register_method
from methods.released_init import load_block_draws, released_draws, rewound_rng

# ---------------------------------------------------------------------------------------------- MAWS


@torch.no_grad()
def mutual_attention(layer: LayerQK, statistics: ModuleType = fast) -> torch.Tensor:
    """MAWS score ``[B, N]`` of one layer: head mean of the CLS row times head mean of the CLS column.

    The product of the two head means, not the mean of per-head products (F:modeling.py:267-270).
    `statistics`: `methods.attention.fast` (from q, k) or `.reference` (full maps).
    """
    row = statistics.cls_row_softmax(layer, 0).mean(dim=1)
    column = statistics.cls_column_softmax(layer, 0).mean(dim=1)
    return row * column


def maws_scores(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """MAWS scores ``[B, N]`` from unscaled q, k ``[B, H, N, d]`` (d^-1/2 is applied here); fast path."""
    return mutual_attention(LayerQK(q=q, k=k, scale=q.shape[-1] ** -0.5), fast)


def top_tokens(scores: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """Indices ``[B, num_tokens]`` of the largest scores, best first."""
    if not 1 <= num_tokens <= scores.shape[-1]:
        raise ValueError(f"num_tokens must be between 1 and the {scores.shape[-1]} tokens, got {num_tokens}")
    return scores.topk(num_tokens, dim=-1, sorted=True).indices


def maws_select(q: torch.Tensor, k: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """The `num_tokens` MAWS picks ``[B, num_tokens]``, best first (index 0, the CLS token, may be one)."""
    return top_tokens(maws_scores(q, k), num_tokens)


# -------------------------------------------------------------------------------------------- fusion


def fuse_fast(outputs: Sequence[torch.Tensor], layers: Sequence[LayerQK], num_tokens: int
              ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """[CLS of the last output; each layer's picks] with `topk` and one batched gather per layer.

    outputs: block outputs ``[B, N, D]`` (attached to autograd); layers: the same blocks' q/k.
    Returns the fused tokens ``[B, 1 + len(layers)·k, D]`` and the picks per layer ``[B, k]``.
    """
    picks = [top_tokens(mutual_attention(layer, fast), num_tokens) for layer in layers]
    rows = torch.arange(outputs[0].shape[0], device=outputs[0].device)[:, None]
    parts = [hidden[rows, idx] for hidden, idx in zip(outputs, picks)]
    return torch.cat([outputs[-1][:, :1], *parts], dim=1), picks


def fuse_reference(outputs: Sequence[torch.Tensor], layers: Sequence[LayerQK], num_tokens: int
                   ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The released code's fusion: full-map scores, `argsort` of all tokens, a Python loop over the
    samples extending per-sample lists with one-row views, two `stack` calls (F:modeling.py:301-317)."""
    batch = outputs[0].shape[0]
    tokens: list[list[torch.Tensor]] = [[] for _ in range(batch)]
    picks = []
    for hidden, layer in zip(outputs, layers):
        order = torch.argsort(mutual_attention(layer, reference), dim=1, descending=True)
        picks.append(order[:, :num_tokens])
        for i in range(batch):
            tokens[i].extend(hidden[i, order[i, :num_tokens]])
    selected = torch.stack([torch.stack(sample) for sample in tokens])
    return torch.cat([outputs[-1][:, :1], selected], dim=1), picks


Fuser = Callable[[Sequence[torch.Tensor], Sequence[LayerQK], int], tuple[torch.Tensor, list[torch.Tensor]]]
FUSERS: Mapping[str, Fuser] = {"fused": fuse_fast, "eager": fuse_reference}  # by attention mode


@dataclass
class Fusion:
    """What the last block sees, and where it came from (tests check provenance)."""

    tokens: torch.Tensor  # [B, 1 + (L-1)·k, D]
    picks: list[torch.Tensor]  # per MAWS layer, [B, k], best first
    outputs: list[torch.Tensor]  # block outputs Z^0 .. Z^{L-2}, [B, N, D]


class FFVTModel(nn.Module):
    """A timm ViT whose blocks 0..L-2 feed MAWS and whose last block and norm run on the fused tokens.

    `vit.blocks[-1]` and `vit.norm` play FFVT's `ff_last_layer` and `ff_encoder_norm`, `vit.head`
    its zero-initialised `head`.
    """

    def __init__(self, vit: VisionTransformer, num_tokens: int, label_smoothing: float = 0.0):
        super().__init__()
        if len(vit.blocks) < 2:
            raise ValueError("FFVT needs at least 2 blocks (MAWS layers plus the fusion block)")
        self.vit = vit
        self.num_tokens = num_tokens
        self.label_smoothing = label_smoothing

    def fuse(self, images: torch.Tensor) -> Fusion:
        x = embed_tokens(self.vit, images)
        body = self.vit.blocks[:-1]
        with AttentionCapture(body, outputs=True) as capture:
            body(x)
        tokens, picks = FUSERS[capture.mode](capture.outputs, capture.layers, self.num_tokens)
        return Fusion(tokens, picks, capture.outputs)

    def classify(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits from the fused tokens: last block, norm, head on token 0."""
        return self.vit.forward_head(self.vit.norm(self.vit.blocks[-1](tokens)))

    def forward(self, images: torch.Tensor, targets: torch.Tensor | None = None):
        logits = self.classify(self.fuse(images).tokens)
        if targets is None:
            return method_output(logits)
        ce = F.cross_entropy(logits.to(compute_dtype(logits)), targets, label_smoothing=self.label_smoothing)
        return method_output(logits, loss=ce, losses={"ce": ce})

    @torch.no_grad()
    def explain(self, images: torch.Tensor) -> dict:
        """The explain hook (`methods.explain`): each MAWS layer's picks and the fused logits."""
        fusion = self.fuse(images)
        return {"kind": "maws", "logits": self.classify(fusion.tokens), "picks": torch.stack(fusion.picks, dim=1)}


# ------------------------------------------------------------------------------------------- adapter


def check_depth(name: str, backbone: BackboneConfig) -> None:
    if backbone.depth < 2:
        raise UsageError(f"{name} needs a backbone of at least 2 blocks (selection layers plus the new last "
                         f"block), got depth {backbone.depth}")


@register_method
class FFVT(MethodAdapter):
    name = "ffvt"
    summary = "MAWS picks k tokens from every layer; a new last block fuses them with CLS"
    reference = ("Wang, Yu, Gao, Zhang, Feature Fusion Vision Transformer for Fine-Grained Visual "
                 "Categorization, BMVC 2021; github.com/Markin-Wang/FFVT @ 9e44d1b")
    options = {
        "num_tokens": 12,  # k, tokens kept per MAWS layer (README: 12; 24 for Dogs)
        "load_final_norm": False,  # fused norm from the checkpoint's encoder_norm (BMVC commit 51ee006)
        "pretrained_last_block": False,  # fusion block from the checkpoint's last block (never in the released code)
    }
    variants = {
        "bmvc": {"load_final_norm": True},  # "experiments complete version for BMVC" (51ee006)
    }
    recipe = {}  # fgbench's defaults are FFVT's recipe (write-up §3); cards set the per-dataset values

    def check_options(self, options) -> None:
        k = options["num_tokens"]
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise UsageError(f"bad options for ffvt: num_tokens must be an integer >= 1 (got {k!r})")

    def configure_backbone(self, backbone: BackboneConfig, options) -> BackboneConfig:
        check_depth(self.name, backbone)
        tokens = backbone.num_prefix_tokens + backbone.num_patches
        if options["num_tokens"] > tokens:
            raise UsageError(f"ffvt: num_tokens {options['num_tokens']} is more than the {tokens} tokens of a "
                             f"{backbone.img_size} px image at patch {backbone.patch_size}; use --opt num_tokens=N "
                             f"with N <= {tokens}")
        return backbone

    def build(self, num_classes: int, backbone: BackboneConfig, options, recipe) -> nn.Module:
        """timm's model, then the released constructor's draws replayed from the RNG state on entry:
        a seeded build gives `ff_last_layer` the released code's values; the head stays zero."""
        with rewound_rng():
            vit = create_vit(backbone, num_classes)
        fusion_block, _ = released_draws(vit, num_classes, new_block_first=True)
        renew_last_layers(vit, keep_last_block=options["pretrained_last_block"],
                          keep_final_norm=options["load_final_norm"],
                          fresh_block=lambda block: load_block_draws(block, fusion_block))
        return FFVTModel(vit, options["num_tokens"], label_smoothing=recipe.label_smoothing)
