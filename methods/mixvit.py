"""`mixvit`: Mix-ViT's attentive token mixing on the shared ViT (Yu et al., Pattern Recognition 135,
2023; code Markin-Wang/MixViT @ 1be7032, the ViT-B/16 tree `mixvit_purevit`).

Training adds a side branch at the input of the last block: each sample's k most attended patch
tokens are overwritten by the k most attended tokens of a partner drawn from the same per-device
batch (rank r onto rank r), a fresh block + LayerNorm reads the mixed sequence, and one Linear on
its class token predicts which positions were substituted (BCE, weight `mask_weight`). The main
branch (all blocks, final norm, head) is a plain ViT and is all that runs at inference.

Patch score = head mean of the CLS row of A_{L-1}···A_0 (row-softmax maps) times head mean of the
CLS column of C_{L-1}···C_0 (column-softmax maps), over all L blocks. The fast path pushes one
vector through the layers from the blocks' q/k (`methods.attention.fast`) while the blocks keep
fused attention; `attention=eager` takes the originals' full-map products instead.

Quirks of the released code, each an option (default = released code; all off = `mixvit:clean`):

- ``index_shift``: the selected *patch* index p is used as *sequence* position p, i.e. the token
  left of the patch in raster order; patch 0 hits the class token and the last patch is never
  written. Off: position p + 1.
- ``chained``: substitution is sequential and in place (sample j reads partner rows that earlier
  steps already overwrote), so in a 2-cycle a sample gets its own tokens back while its targets
  still say "substituted". Off: every sample reads its partner's original tokens.
- ``mask_head_width``: ``P+2`` columns (two always-zero targets), or ``P`` (one per patch).

Public maths (the tests hold them to loops over samples): `num_selected`, `token_scores`,
`draw_partners`, `chained_sources`, `substitute`; `MaskBranch` is reused by `methods.mixvit_parts`.
"""

from __future__ import annotations

import copy
from types import ModuleType
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from bench.errors import UsageError
from methods.attention import AttentionCapture, LayerQK, fast
from methods.attention.fast import compute_dtype, wide
from methods.backbone import BackboneConfig, create_vit, embed_tokens
from methods.base import MethodAdapter, method_output
from methods.registry import register_method

MASK_HEAD_WIDTHS = ("P+2", "P")

# ------------------------------------------------------------------------------------------ selection


def num_selected(ratio: float, num_patches: int) -> int:
    """k = int(ratio · P), the float product truncated like the original (0.2·784 → 156, 0.02·6 → 0)."""
    return int(ratio * num_patches)


def patch_scores(layers: Sequence[LayerQK], statistics: ModuleType = fast) -> torch.Tensor:
    """``[B, N-1]`` Mix-ViT scores of the patch tokens (token 0 is the class token), no gradient.

    statistics: `methods.attention.fast` (vector propagation) or `.reference` (full maps).
    """
    attention = statistics.rollout_row(layers, 0).mean(dim=1)
    contribution = statistics.rollout_column(layers, 0).mean(dim=1)
    return (attention * contribution)[:, 1:]


def token_scores(qs: Sequence[torch.Tensor], ks: Sequence[torch.Tensor]) -> torch.Tensor:
    """Patch scores from per-layer unscaled q, k ``[B, H, N, d]`` (first layer first): ``[B, N-1]``."""
    if len(qs) != len(ks) or not qs:
        raise ValueError(f"need one q and one k per layer, got {len(qs)} and {len(ks)}")
    return patch_scores([LayerQK(q=q, k=k, scale=q.shape[-1] ** -0.5) for q, k in zip(qs, ks)], fast)


def select_tokens(scores: torch.Tensor, k: int) -> torch.Tensor:
    """The k best indices per row, best first: ``[B, k]`` (`torch.topk`, sorted, as the original)."""
    return torch.topk(scores, k, dim=1).indices


# ------------------------------------------------------------------------------------------- mixing


def draw_partners(batch: int) -> list[int]:
    """One partner per sample from the global CPU RNG, the original's loop: for j = 0..B-1 draw
    `torch.randint(0, B, (1, 1))`, again while it equals j. Random, data-independent draw count."""
    if batch < 2:
        raise ValueError(f"partners need a batch of at least 2 (the original loops forever at {batch})")
    partners = []
    for j in range(batch):
        k = int(torch.randint(0, batch, (1, 1)))
        while k == j:
            k = int(torch.randint(0, batch, (1, 1)))
        partners.append(k)
    return partners


def chained_sources(partners: Sequence[int]) -> list[int]:
    """The row whose *original* tokens sample j ends up with under the sequential in-place loop:
    source(j) = p(j) if p(j) >= j (row p(j) not yet written) else source(p(j))."""
    sources: list[int] = []
    for j, p in enumerate(partners):
        sources.append(p if p >= j else sources[p])
    return sources


def host_indices(values: Sequence[int], device: torch.device) -> torch.Tensor:
    """Host integers as a device index tensor without a sync: a pageable host-to-device copy would
    wait for the queued forward pass, so on CUDA the copy goes through pinned memory, asynchronously."""
    out = torch.tensor(values, dtype=torch.long)
    if device.type == "cuda":
        return out.pin_memory().to(device, non_blocking=True)
    return out.to(device)


def substitute_positions(x: torch.Tensor, positions: torch.Tensor, partners: Sequence[int],
                         chained: bool = True) -> torch.Tensor:
    """x ``[B, N, D]`` with row j's `positions[j]` (``[B, k]``) replaced by its source row's tokens
    at the source's positions, rank r onto rank r. Out of place (differentiable into both rows);
    one gather and one `index_put` instead of the original's B sequential writes."""
    B, k = positions.shape
    if len(partners) != B:
        raise ValueError(f"{len(partners)} partners for a batch of {B}")
    src = host_indices(chained_sources(partners) if chained else list(partners), x.device)
    values = x[src[:, None], positions[src]]  # [B, k, D]
    rows = torch.arange(B, device=x.device)[:, None].expand(B, k)
    return x.index_put((rows, positions), values)


def multi_hot(indices: torch.Tensor, width: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``[B, width]`` targets with a one at each of a row's indices (no host sync: no range check)."""
    out = torch.zeros(indices.shape[0], width, dtype=dtype, device=indices.device)
    return out.scatter_(1, indices, 1.0)


def substitute(x: torch.Tensor, idx: torch.Tensor, partners: Sequence[int], index_shift: bool = True,
               chained: bool = True, width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix-ViT's substitution of the selected patches `idx` ``[B, k]`` (patch indices, best first).

    Returns the mixed ``[B, N, D]`` tensor and the ``[B, width]`` multi-hot targets with ones at
    each sample's own `idx` (column c = patch c; with `index_shift` that is also the sequence
    position written, as in the original). width: None = P + 2 (the released head), P = clean.
    """
    positions = idx if index_shift else idx + 1
    mixed = substitute_positions(x, positions, partners, chained)
    width = x.shape[1] + 1 if width is None else width
    return mixed, multi_hot(idx, width, compute_dtype(x))


# ------------------------------------------------------------------------------------------ modules


def fresh_block_like(block: nn.Module) -> nn.Module:
    """A new block shaped like `block` with the reference's fresh init: PyTorch's default for the
    attention Linears and norms, MLP weights xavier-uniform, MLP biases N(0, 1e-6)."""
    new = copy.deepcopy(block)
    for module in new.modules():
        if isinstance(module, (nn.Linear, nn.LayerNorm)):
            module.reset_parameters()
    for fc in (new.mlp.fc1, new.mlp.fc2):
        nn.init.xavier_uniform_(fc.weight)
        nn.init.normal_(fc.bias, std=1e-6)
    return new


class MaskBranch(nn.Module):
    """Side block + LayerNorm(eps 1e-6) + Linear on the class token: the substitution predictor."""

    def __init__(self, block: nn.Module, embed_dim: int, width: int):
        super().__init__()
        self.block = fresh_block_like(block)
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, width)

    def features(self, mixed: torch.Tensor) -> torch.Tensor:
        """The normalised class token of the mixed sequence, ``[B, D]``."""
        return self.norm(self.block(mixed))[:, 0]

    def forward(self, mixed: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(mixed))

    def untouched(self) -> torch.Tensor:
        """A zero that depends on every parameter: a step without mixing still gives each one a
        (zero) gradient, as DDP requires of every parameter in every step."""
        return sum(p.sum() for p in self.parameters()) * 0.0


class MixViT(nn.Module):
    """timm ViT (main branch) + `MaskBranch` fed with mixed tokens at the input of the last block."""

    def __init__(self, vit: VisionTransformer, mask_topk: float = 0.2, mask_weight: float = 1.0,
                 index_shift: bool = True, chained: bool = True, mask_head_width: str = "P+2",
                 label_smoothing: float = 0.0):
        super().__init__()
        self.vit = vit
        patches = vit.patch_embed.num_patches
        self.num_selected = num_selected(mask_topk, patches)
        self.mask_weight = mask_weight
        self.index_shift = index_shift
        self.chained = chained
        self.label_smoothing = label_smoothing
        self.mask = MaskBranch(vit.blocks[-1], vit.embed_dim, patches + 2 if mask_head_width == "P+2" else patches)

    def forward(self, images: torch.Tensor, targets: torch.Tensor | None = None):
        x = embed_tokens(self.vit, images)
        mixing = self.training and targets is not None
        if mixing:
            with AttentionCapture(self.vit.blocks) as capture:
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
        bce = self.mask_weight * self.substitution_loss(hidden, capture)
        return method_output(logits, loss=ce + bce, losses={"ce": ce, "bce": bce})

    def substitution_loss(self, hidden: torch.Tensor, capture: AttentionCapture) -> torch.Tensor:
        """BCE of the mask branch on `hidden` mixed across the batch (zero, without mixing, at B = 1)."""
        if hidden.shape[0] < 2:
            return self.mask.untouched()
        idx = select_tokens(patch_scores(capture.layers, capture.statistics), self.num_selected)
        mixed, labels = substitute(hidden, idx, draw_partners(hidden.shape[0]), self.index_shift, self.chained,
                                   width=self.mask.head.out_features)
        logits = wide(self.mask(mixed))
        return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))

    @torch.no_grad()
    def explain(self, images: torch.Tensor, partners: Sequence[int] | None = None) -> dict:
        """The explain hook (`methods.explain`): training's substitution on fixed partners (image j
        with j + 1, cyclically, unless given), what it overwrote with whose tokens, and the predictor."""
        batch = images.shape[0]
        if batch < 2:
            raise ValueError("Mix-ViT mixes tokens between images: explain it on at least 2 images")
        partners = list(partners) if partners is not None else [(j + 1) % batch for j in range(batch)]
        x = embed_tokens(self.vit, images)
        with AttentionCapture(self.vit.blocks) as capture:
            hidden = self.vit.blocks[:-1](x)
            logits = self.vit.forward_head(self.vit.norm(self.vit.blocks[-1](hidden)))
        idx = select_tokens(patch_scores(capture.layers, capture.statistics), self.num_selected)
        mixed, _ = substitute(hidden, idx, partners, self.index_shift, self.chained, width=self.mask.head.out_features)
        positions = idx if self.index_shift else idx + 1
        sources = torch.tensor(chained_sources(partners) if self.chained else partners, device=idx.device)
        patches = self.vit.patch_embed.num_patches
        predicted = torch.sigmoid(wide(self.mask(mixed)))[:, :patches]  # column c = patch c
        return {"kind": "mixing", "logits": logits, "selected": idx, "positions": positions, "sources": sources,
                "source_positions": positions[sources],
                "predicted": predicted.reshape(batch, *self.vit.patch_embed.grid_size)}


# ------------------------------------------------------------------------------------------ adapter

# Per-dataset settings of the released scripts (write-up §5.2). The UFG scripts train the part
# model (`mixvit_parts`); their mask weight and ratio are the only published ones for those sets.
# Scripts without `--mask` (soyloc, SoyAgeing R3: a trailing backslash, probably truncated) train
# no mixing at all; fgbench runs Mix-ViT with mixing there, at the weight the script passes.
DATASET_OPTIONS: Mapping[str, Mapping[str, Any]] = {
    "cotton": {"mask_weight": 4.0, "mask_topk": 0.2},
    "soyloc": {"mask_weight": 4.0, "mask_topk": 0.2},
    "soygene": {"mask_weight": 4.0, "mask_topk": 0.2},
    "soyageing_r1": {"mask_weight": 1.0, "mask_topk": 0.2},
    "soyageing_r3": {"mask_weight": 4.0, "mask_topk": 0.2},
    "soyageing_r4": {"mask_weight": 1.0, "mask_topk": 0.2},
    "soyageing_r5": {"mask_weight": 4.0, "mask_topk": 0.2},
    "soyageing_r6": {"mask_weight": 4.0, "mask_topk": 0.2},
    "cub": {"mask_weight": 0.1, "mask_topk": 0.2},  # mixvit_purevit/train_cub.sh
    "soyglobal": {"mask_weight": 1.0, "mask_topk": 0.1},  # mixvit_purevit/train_soygbl.sh
}

REFERENCE = ("Yu et al., Mix-ViT: Mixing attentive vision transformer for ultra-fine-grained visual "
             "categorization, Pattern Recognition 135 (2023); github.com/Markin-Wang/MixViT @ 1be7032")


def check_mixing_options(options: Mapping[str, Any]) -> list[str]:
    """Problems with the options `mixvit` and `mixvit_parts` share."""
    problems = []
    if not 0.0 <= options["mask_topk"] <= 1.0:
        problems.append(f"mask_topk must be in [0, 1] (got {options['mask_topk']})")
    if options["mask_weight"] < 0:
        problems.append(f"mask_weight must be >= 0 (got {options['mask_weight']})")
    return problems


@register_method
class MixViTAdapter(MethodAdapter):
    name = "mixvit"
    family = "mixvit"
    summary = "Mix-ViT: attentive token substitution between samples before the last block, BCE substitution predictor"
    reference = REFERENCE
    options = {
        "mask_topk": 0.2,  # ratio of patches substituted (k = int(ratio * P))
        "mask_weight": 1.0,  # BCE weight (the scripts' --mask_weight default)
        "index_shift": True,  # patch index used as sequence position (released code)
        "chained": True,  # sequential in-place substitution (released code)
        "mask_head_width": "P+2",  # substitution head width: P+2 (released code) or P
    }
    variants = {
        "clean": {"index_shift": False, "chained": False, "mask_head_width": "P"},  # the paper's description
        "eager": {"attention": "eager"},  # full maps and N×N×N rollout products, for side-by-side speed
    }
    dataset_options = DATASET_OPTIONS

    def check_options(self, options: Mapping[str, Any]) -> None:
        problems = check_mixing_options(options)
        if options["mask_head_width"] not in MASK_HEAD_WIDTHS:
            problems.append(f"mask_head_width must be one of {', '.join(MASK_HEAD_WIDTHS)} "
                            f"(got {options['mask_head_width']!r})")
        if problems:
            raise UsageError(f"bad options for {self.name}: " + "; ".join(problems))

    def check_backbone(self, backbone: BackboneConfig) -> None:
        if backbone.extra_tokens:
            raise UsageError(f"{self.name} needs a backbone with one class token and no extra prefix tokens "
                             f"(got {backbone.extra_tokens} extra)")
        if backbone.depth < 2:
            raise UsageError(f"{self.name} mixes the input of the last block: it needs depth >= 2 (got {backbone.depth})")

    def build(self, num_classes: int, backbone: BackboneConfig, options, recipe) -> nn.Module:
        vit = create_vit(backbone, num_classes)
        return MixViT(vit, mask_topk=options["mask_topk"], mask_weight=options["mask_weight"],
                      index_shift=options["index_shift"], chained=options["chained"],
                      mask_head_width=options["mask_head_width"], label_smoothing=recipe.label_smoothing)
