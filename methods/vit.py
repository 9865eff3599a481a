"""`vit`: the plain ViT classifier on the class token, the baseline of FFVT and TransFG."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from methods.attention.fast import wide
from methods.backbone import BackboneConfig, create_vit
from methods.base import MethodAdapter, method_output
from methods.registry import register_method


class ViTClassifier(nn.Module):
    def __init__(self, vit: nn.Module, label_smoothing: float = 0.0):
        super().__init__()
        self.vit = vit
        self.label_smoothing = label_smoothing

    def forward(self, images, targets=None):
        logits = self.vit(images)
        if targets is None:
            return method_output(logits)
        ce = F.cross_entropy(wide(logits), targets, label_smoothing=self.label_smoothing)
        return method_output(logits, loss=ce, losses={"ce": ce})


@register_method
class ViT(MethodAdapter):
    name = "vit"
    summary = "plain ViT on the class token (baseline of FFVT/TransFG)"
    reference = "Dosovitskiy et al., ICLR 2021; recipe of FFVT (Wang et al., BMVC 2021)"

    def build(self, num_classes: int, backbone: BackboneConfig, options, recipe) -> nn.Module:
        return ViTClassifier(create_vit(backbone, num_classes), label_smoothing=recipe.label_smoothing)
