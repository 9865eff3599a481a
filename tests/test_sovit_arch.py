"""The original So-ViT-7/10/14/19: parameter counts, stem geometry, position table, config hygiene, a step."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from bench.errors import UsageError
from bench.recipe import Recipe
from methods import get_method, method_names
from methods.backbone import BackboneConfig
from methods.sovit_arch import ARCHS, ConvTokenStem, sinusoid_table

# write-up §4 (SV code at c2d076e, 224 px, 1000 classes): all parameters incl. the fixed position
# table, and the trainable ones, in millions to three decimals
WRITEUP_PARAMS_M = {"sovit7": (5.580, 5.529), "sovit10": (7.159, 7.108), "sovit14": (24.719, 24.643),
                    "sovit19": (43.888, 43.799)}


def build(name, img_size=224, num_classes=1000, device="cpu", **overrides):
    adapter = get_method(name)
    options = adapter.resolve_options(None, overrides)
    with torch.device(device):
        return adapter.build(num_classes, BackboneConfig(img_size=img_size), options, Recipe())


def count(params):
    return sum(p.numel() for p in params)


@pytest.mark.parametrize("name", list(ARCHS))
def test_parameter_counts_match_the_writeup(name):
    model = build(name, device="meta")  # shapes only: no memory, no init cost
    total, trainable = WRITEUP_PARAMS_M[name]
    assert round(count(model.parameters()) / 1e6, 3) == total
    assert round(count(p for p in model.parameters() if p.requires_grad) / 1e6, 3) == trainable


def test_sovit14_parameter_breakdown():
    """Write-up §4: stem 0.448 M, head 3.501 M of which visual_fc 3.07 M."""
    model = build("sovit14", device="meta")
    assert count(model.vit.patch_embed.parameters()) == 448_384
    assert count(model.head.parameters()) + count(model.vit.head.parameters()) == 3_501_296
    assert count(model.head.fc.parameters()) == 3072 * 1000 + 1000


@pytest.mark.parametrize("name,dims,dropout", [("sovit7", (48, 24), 0.0), ("sovit10", (48, 24), 0.0),
                                               ("sovit14", (64, 48), 0.5), ("sovit19", (96, 48), 0.5)])
def test_each_variant_keeps_its_own_config_in_one_process(name, dims, dropout):
    """The original mutates module-level dicts: So_vit_19 built after So_vit_7 loses its dropout."""
    for other in ARCHS:
        build(other, device="meta")
    head = build(name, device="meta").head
    assert (head.proj_p.fc.out_features, head.proj_q.fc.out_features) == dims
    assert head.num_features == dims[0] * dims[1]
    assert head.drop.p == dropout


def test_trunk_matches_the_original_block_settings():
    vit = build("sovit19", device="meta").vit
    arch = ARCHS["sovit19"]
    assert vit.pos_embed.shape == (1, 197, 448) and not vit.pos_embed.requires_grad
    block = vit.blocks[0]
    assert block.attn.qkv.bias is None and block.attn.num_heads == 7 and block.attn.proj.bias is not None
    assert block.norm1.eps == vit.norm.eps == 1e-5
    assert block.mlp.fc1.out_features == int(448 * arch.mlp_ratio) == 1344
    rates = [0.0 if isinstance(b.drop_path1, nn.Identity) else b.drop_path1.drop_prob for b in vit.blocks]
    np.testing.assert_allclose(rates, np.linspace(0, 0.1, 19), atol=1e-7)


def original_sinusoid_table(n_position, d_hid):
    """SV:src/model/vitBlock.py:70-80, verbatim apart from formatting."""
    def get_position_angle_vec(position):
        return [position / np.power(10000, 2 * (hid_j // 2) / d_hid) for hid_j in range(d_hid)]

    sinusoid_table = np.array([get_position_angle_vec(pos_i) for pos_i in range(n_position)])
    sinusoid_table[:, 0::2] = np.sin(sinusoid_table[:, 0::2])
    sinusoid_table[:, 1::2] = np.cos(sinusoid_table[:, 1::2])
    return torch.FloatTensor(sinusoid_table).unsqueeze(0)


def test_position_table_is_the_originals():
    torch.testing.assert_close(sinusoid_table(197, 64), original_sinusoid_table(197, 64), rtol=0, atol=1e-6)
    model = build("sovit7", img_size=32)
    torch.testing.assert_close(model.vit.pos_embed.data, original_sinusoid_table(5, 256), rtol=0, atol=1e-6)


def test_stem_gives_one_token_per_16_pixels_at_any_multiple_of_16():
    torch.manual_seed(0)
    stem = ConvTokenStem(img_size=224, embed_dim=8).eval()
    with torch.no_grad():
        assert stem(torch.randn(1, 3, 224, 224)).shape == (1, 196, 8)
        assert stem(torch.randn(2, 3, 48, 48)).shape == (2, 9, 8)
    assert ConvTokenStem(img_size=448, embed_dim=8).num_patches == 784  # the original crashes here
    block = stem.stage[2]
    assert block.conv2.stride == (2, 2) and block.downsample is not None
    assert (block.bn1.eps, block.bn1.momentum) == (1e-3, 0.01)
    assert (block.downsample[1].eps, block.downsample[1].momentum) == (1e-5, 0.1)
    assert stem.stem[0].bias is not None and isinstance(stem.stem[1], nn.MaxPool2d)


def test_sizes_that_are_not_multiples_of_16_are_usage_errors():
    adapter = get_method("sovit7")
    with pytest.raises(UsageError, match="multiple of 16"):
        adapter.check_backbone(BackboneConfig(img_size=72, patch_size=8))
    adapter.check_backbone(BackboneConfig(img_size=64, patch_size=8))


def test_scratch_variants_are_registered_outside_all_with_the_imagenet_recipe():
    assert {"sovit", "sovit7", "sovit10", "sovit14", "sovit19"} <= set(method_names())
    assert "sovit" in method_names(only_in_all=True)
    assert not set(ARCHS) & set(method_names(only_in_all=True))
    recipe7, recipe19 = get_method("sovit7").recipe, get_method("sovit19").recipe
    assert (recipe7["optimizer"], recipe7["lr"], recipe7["weight_decay"], recipe19["weight_decay"]) == \
        ("adamw", 1e-3, 0.03, 0.05)
    assert recipe7["label_smoothing"] == 0.1 and recipe7["clip_grad"] == 0.0
    Recipe(**recipe19)  # every key is a valid Recipe field


def test_sovit7_trains_a_step():
    torch.manual_seed(0)
    adapter = get_method("sovit7")
    model = build("sovit7", img_size=32, num_classes=4, dropout=0.5)
    groups = adapter.param_groups(model, Recipe(weight_decay=0.03))
    assert all(p is not model.vit.pos_embed for g in groups for p in g["params"])
    optimizer = torch.optim.AdamW(groups, lr=1e-3)
    images, targets = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    before = model.head.norm.start.detach().clone()
    model.train()
    out = model(images, targets)
    assert out["logits"].shape == (4, 4) and torch.isfinite(out["loss"])
    out["loss"].backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    optimizer.step()
    assert not torch.equal(before, model.head.norm.start)
    model.eval()
    with torch.no_grad():
        assert model(images)["logits"].shape == (4, 4)
