"""Regression guard (write-up §7, §8.12): in fused mode FFVT's and TransFG's selections keep no
N×N map per layer; in eager mode (the originals' way) they do."""

from __future__ import annotations

import pytest
import torch

from bench.recipe import Recipe
from methods import get_method
from methods.backbone import BackboneConfig
from test_attention import peak_bytes

pytestmark = pytest.mark.usefixtures("single_thread")


def training_forward_peak(method: str, depth: int, mode: str) -> int:
    """Peak bytes of a train-mode forward with the loss, for a narrow ViT at N = 577 tokens."""
    cfg = BackboneConfig(img_size=96, patch_size=4, embed_dim=8, depth=depth, num_heads=4, drop_rate=0.0)
    adapter = get_method(method)
    options = adapter.resolve_options(None, {"attention": mode})
    torch.manual_seed(0)
    model = adapter.create(3, adapter.configure_backbone(cfg, options), options, Recipe()).train()
    images, targets = torch.randn(1, 3, 96, 96), torch.tensor([1])
    return peak_bytes(lambda: model(images, targets)["loss"])


@pytest.mark.parametrize("method", ["ffvt", "transfg"])
def test_fused_selection_keeps_no_attention_map_per_layer(method):
    one_map = 1 * 4 * 577 * 577 * 4  # B·H·N² float32 bytes: 5.3 MB
    fused = {depth: training_forward_peak(method, depth, "fused") for depth in (3, 5)}
    eager = {depth: training_forward_peak(method, depth, "eager") for depth in (3, 5)}
    assert eager[5] - eager[3] >= 2 * one_map  # two more selection layers, at least a map each
    # fused: no growth; TransFG's rollout builds each layer's map in transient row slices (here one
    # slice of all 577 rows: the default slice is capped at 128 MiB, not at a fraction of N)
    assert fused[5] - fused[3] < 0.5 * one_map
