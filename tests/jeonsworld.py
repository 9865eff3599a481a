"""A plain transcription of the jeonsworld ViT-pytorch lineage (FFVT and TransFG `models/modeling.py`),
the slow obviously-correct side of the FFVT/TransFG reference tests.

Same structure as the originals: separate query/key/value Linears, explicit softmax maps, the
second softmax over the query axis for the CLS column, Python loops over samples. No dropout (the
tests zero it). `ReferenceViT.from_timm(vit)` copies a timm ViT's weights into it, so both run the
same numbers; `timm_grads()` maps its gradients back to the timm parameter names (q/k/v gradients
concatenated into `qkv`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.query, self.key, self.value, self.out = (nn.Linear(dim, dim) for _ in range(4))

    def split(self, x: torch.Tensor) -> torch.Tensor:
        B, N, _ = x.shape
        return x.view(B, N, self.heads, self.head_dim).permute(0, 2, 1, 3)

    def forward(self, x: torch.Tensor):
        """-> (output, weights = softmax over keys [B, H, N, N], contribution = softmax over queries,
        column 0 [B, H, N]) as F:models/modeling.py:99-122."""
        q, k, v = self.split(self.query(x)), self.split(self.key(x)), self.split(self.value(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)
        weights = F.softmax(scores, dim=-1)
        contribution = F.softmax(scores, dim=-2)[:, :, :, 0]
        context = torch.matmul(weights, v).permute(0, 2, 1, 3).flatten(2)
        return self.out(context), weights, contribution


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int):
        """Built in the released order (T:models/modeling.py:177-184, 112-126): the norms, the MLP with
        its `_init_weights`, then the attention, so a seeded construction draws the released values."""
        super().__init__()
        self.attention_norm = nn.LayerNorm(dim, eps=1e-6)
        self.ffn_norm = nn.LayerNorm(dim, eps=1e-6)
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        nn.init.xavier_uniform_(self.fc1.weight)
        nn.init.xavier_uniform_(self.fc2.weight)
        nn.init.normal_(self.fc1.bias, std=1e-6)
        nn.init.normal_(self.fc2.bias, std=1e-6)
        self.attn = Attention(dim, heads)

    def forward(self, x: torch.Tensor):
        h, weights, contribution = self.attn(self.attention_norm(x))
        x = x + h
        x = x + self.fc2(F.gelu(self.fc1(self.ffn_norm(x))))
        return x, weights, contribution


class ReferenceViT(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int, depth: int, patch: int, stride: int, n_patches: int,
                 num_classes: int, in_chans: int = 3):
        """Layers in the released constructors' order: patch conv, blocks, norm, head. In TransFG the
        last block is `part_layer` (built after the others); FFVT builds `ff_last_layer` first."""
        super().__init__()
        self.patch = nn.Conv2d(in_chans, dim, kernel_size=patch, stride=stride)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.zeros(1, 1 + n_patches, dim))
        self.blocks = nn.ModuleList(Block(dim, heads, hidden) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch(images).flatten(2).transpose(-1, -2)
        return torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos

    # timm name -> (reference parameters whose concatenation along dim 0 it is)
    def _names(self) -> dict[str, list[nn.Parameter]]:
        names = {"patch_embed.proj.weight": [self.patch.weight], "patch_embed.proj.bias": [self.patch.bias],
                 "cls_token": [self.cls], "pos_embed": [self.pos], "norm.weight": [self.norm.weight],
                 "norm.bias": [self.norm.bias], "head.weight": [self.head.weight], "head.bias": [self.head.bias]}
        for i, b in enumerate(self.blocks):
            p = f"blocks.{i}."
            a = b.attn
            names.update({
                p + "norm1.weight": [b.attention_norm.weight], p + "norm1.bias": [b.attention_norm.bias],
                p + "attn.qkv.weight": [a.query.weight, a.key.weight, a.value.weight],
                p + "attn.qkv.bias": [a.query.bias, a.key.bias, a.value.bias],
                p + "attn.proj.weight": [a.out.weight], p + "attn.proj.bias": [a.out.bias],
                p + "norm2.weight": [b.ffn_norm.weight], p + "norm2.bias": [b.ffn_norm.bias],
                p + "mlp.fc1.weight": [b.fc1.weight], p + "mlp.fc1.bias": [b.fc1.bias],
                p + "mlp.fc2.weight": [b.fc2.weight], p + "mlp.fc2.bias": [b.fc2.bias],
            })
        return names

    @classmethod
    def from_timm(cls, vit) -> "ReferenceViT":
        dim, block = vit.embed_dim, vit.blocks[0]
        conv = vit.patch_embed.proj
        ref = cls(dim, block.attn.num_heads, block.mlp.fc1.out_features, len(vit.blocks), conv.kernel_size[0],
                  conv.stride[0], vit.patch_embed.num_patches, vit.head.out_features)
        ref = ref.to(vit.pos_embed.dtype)
        timm = dict(vit.named_parameters())
        with torch.no_grad():
            for name, params in ref._names().items():
                for param, value in zip(params, timm[name].chunk(len(params), dim=0)):
                    param.copy_(value)
        return ref

    def timm_state(self) -> dict[str, torch.Tensor]:
        """This model's parameters under the timm names (q/k/v concatenated into `qkv`)."""
        return {name: torch.cat([p.detach() for p in params], dim=0) for name, params in self._names().items()}

    def timm_grads(self) -> dict[str, torch.Tensor]:
        return {name: torch.cat([p.grad for p in params], dim=0) for name, params in self._names().items()}

    def assert_same_grads(self, vit: nn.Module, tol: float = 1e-8) -> None:
        """Every parameter of the timm `vit` has a live gradient within `tol` of this model's."""
        want = self.timm_grads()
        got = {name: p.grad for name, p in vit.named_parameters()}
        assert set(got) == set(want)
        for name, grad in got.items():
            assert grad is not None and grad.abs().max() > 0, name
            assert (grad - want[name]).abs().max() <= tol, name


# ------------------------------------------------------------------------------- the R50 of the hybrids


def standardise(weight: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """The released `StdConv2d`'s weight: per output channel, minus the mean, over sqrt(biased var + eps)."""
    var, mean = torch.var_mean(weight, dim=(1, 2, 3), keepdim=True, unbiased=False)
    return (weight - mean) / torch.sqrt(var + eps)


class StdConv(nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, standardise(self.weight), None, self.stride, self.padding)


class Unit(nn.Module):
    """The released `PreActBottleneck` (post-activation despite its name; M:models/modeling_resnet.py:55-91)."""

    def __init__(self, cin: int, cout: int, cmid: int, stride: int):
        super().__init__()
        self.conv1, self.gn1 = StdConv(cin, cmid, 1, bias=False), nn.GroupNorm(32, cmid, eps=1e-6)
        self.conv2, self.gn2 = StdConv(cmid, cmid, 3, stride, padding=1, bias=False), nn.GroupNorm(32, cmid, eps=1e-6)
        self.conv3, self.gn3 = StdConv(cmid, cout, 1, bias=False), nn.GroupNorm(32, cout, eps=1e-6)
        self.project = stride != 1 or cin != cout
        if self.project:
            self.downsample, self.gn_proj = StdConv(cin, cout, 1, stride, bias=False), nn.GroupNorm(cout, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.gn_proj(self.downsample(x)) if self.project else x
        y = F.relu(self.gn1(self.conv1(x)))
        y = F.relu(self.gn2(self.conv2(y)))
        return F.relu(residual + self.gn3(self.conv3(y)))


class ReferenceResNetV2(nn.Module):
    """The released `ResNetV2` (M:models/modeling_resnet.py:129-165): root 7x7/2 conv pad 3, GroupNorm,
    ReLU, 3x3/2 max-pool without padding; stage s has units of width 64·2^s (out 256·2^s), the first
    with stride 2 from the second stage on."""

    def __init__(self, layers: tuple[int, ...], width: int = 64):
        super().__init__()
        self.conv, self.gn = StdConv(3, width, 7, 2, padding=3, bias=False), nn.GroupNorm(32, width, eps=1e-6)
        stages, cin = [], width
        for s, depth in enumerate(layers):
            cmid, cout = width * 2**s, width * 4 * 2**s
            stages.append(nn.ModuleList(Unit(cin if u == 0 else cout, cout, cmid, 2 if s and u == 0 else 1)
                                        for u in range(depth)))
            cin = cout
        self.stages = nn.ModuleList(stages)

    def root(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(F.relu(self.gn(self.conv(x))), kernel_size=3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.root(x)
        for stage in self.stages:
            for unit in stage:
                x = unit(x)
        return x

    @classmethod
    def from_timm(cls, resnet: nn.Module) -> "ReferenceResNetV2":
        """Copy a timm `ResNetV2` (fgbench's hybrid stem) into the transcription."""
        layers = tuple(len(stage.blocks) for stage in resnet.stages)
        ref = cls(layers, resnet.stem.conv.out_channels).to(resnet.stem.conv.weight.dtype)
        pairs = [(ref.conv, resnet.stem.conv), (ref.gn, resnet.stem.norm)]
        for units, stage in zip(ref.stages, resnet.stages):
            for unit, block in zip(units, stage.blocks):
                pairs += [(unit.conv1, block.conv1), (unit.gn1, block.norm1), (unit.conv2, block.conv2),
                          (unit.gn2, block.norm2), (unit.conv3, block.conv3), (unit.gn3, block.norm3)]
                if unit.project:
                    pairs += [(unit.downsample, block.downsample.conv), (unit.gn_proj, block.downsample.norm)]
        with torch.no_grad():
            for mine, theirs in pairs:
                for name, param in mine.named_parameters():
                    param.copy_(getattr(theirs, name))
        return ref
