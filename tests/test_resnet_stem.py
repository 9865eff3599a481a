"""The hybrids' R50 stem: by default the released code's ResNetV2 (the jeonsworld port MixViT uses),
held to a float64 transcription on random weights; timm's TF-"same" stem behind `hybrid_stem=timm`."""

from __future__ import annotations

import pytest
import torch

from bench.errors import UsageError
from bench.presets import PRESETS
from bench.recipe import Recipe
from jeonsworld import ReferenceResNetV2
from methods import get_method
from methods.backbone import BackboneConfig, build_vit

pytestmark = pytest.mark.usefixtures("single_thread")

SMALL = dict(patch_size=16, embed_dim=32, depth=1, num_heads=2, hybrid_layers=(2, 1, 1))


def randomised(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights everywhere (GroupNorm affine too), so every constant and padding shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5 + (1.0 if p.ndim == 1 else 0.0))
    return module


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("size", [64, 80])
def test_the_default_stem_is_the_released_resnetv2(size):
    cfg = BackboneConfig(img_size=size, **SMALL)
    assert cfg.hybrid_stem == "released"
    stem = randomised(build_vit(cfg, 3).patch_embed.backbone.double()).eval()
    ref = ReferenceResNetV2.from_timm(stem).eval()
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    want = ref(x)
    assert want.shape == (2, 1024, size // 16, size // 16)
    assert rel(stem(x), want) < 1e-12
    timm = build_vit(BackboneConfig(img_size=size, hybrid_stem="timm", **SMALL), 3).patch_embed.backbone.double()
    timm.load_state_dict(stem.state_dict())  # same names, same shapes: a checkpoint loads into either
    assert rel(timm.eval()(x), want) > 0.1  # another network on the same weights


def test_released_and_timm_geometry_at_448_px():
    """The released max-pool has no padding: 111 x 111 after it (timm's TF-same: 112); both end at 28 x 28."""
    for stem, pooled in (("released", 111), ("timm", 112)):
        with torch.device("meta"):
            backbone = build_vit(BackboneConfig(img_size=448, hybrid_layers=(3, 4, 9), hybrid_stem=stem), 5)
            resnet = backbone.patch_embed.backbone
            x = torch.zeros(1, 3, 448, 448)
            assert resnet.stem(x).shape[-2:] == (pooled, pooled), stem
            assert resnet(x).shape[-2:] == (28, 28) and backbone.patch_embed.num_patches == 784


def test_presets_name_their_stem_and_mixvit_parts_sizes_its_head_from_it():
    assert PRESETS["base_r50"].backbone["hybrid_stem"] == "released"
    assert PRESETS["base_r50_timm"].backbone["hybrid_stem"] == "timm"
    adapter = get_method("mixvit_parts")
    options = adapter.resolve_options(None)
    for name in ("base_r50", "base_r50_timm"):
        backbone = adapter.configure_backbone(BackboneConfig(img_size=448, **PRESETS[name].backbone), options)
        with torch.device("meta"):
            model = adapter.create(7, backbone, options, Recipe())
        assert model.vit.patch_embed.grid_size == (28, 28)
        assert model.mask.head.out_features == 785  # 28 x 28 + 1, the original's width at 448 px


def test_the_stem_enters_the_cell_identity_of_hybrids_only():
    plain = BackboneConfig(img_size=64, patch_size=8)
    assert "hybrid_stem" not in plain.identity()
    released, timm = (BackboneConfig(img_size=64, hybrid_stem=s, **SMALL).identity() for s in ("released", "timm"))
    assert released["hybrid_stem"] == "released" and released != timm
    with pytest.raises(UsageError, match="hybrid_stem must be one of released, timm"):
        BackboneConfig(img_size=64, hybrid_stem="bit", **SMALL)
