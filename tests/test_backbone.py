"""The shared backbone: reference dropout placement, geometry, prefix tokens, the adapter hooks."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from bench.errors import UsageError
from bench.matrix import MatrixSpec, build_cells
from bench.presets import PRESETS
from methods import get_method, method_names, parse_method_spec
from methods.backbone import BackboneConfig, build_vit, embed_tokens
from methods.pretrained import PretrainedFile

pytestmark = pytest.mark.usefixtures("single_thread")

REFERENCE_DROPOUT = re.compile(r"pos_drop|blocks\.\d+\.mlp\.drop[12]")


@pytest.mark.parametrize("hybrid_layers", [(), (1, 1)])
def test_dropout_placement_module_by_module(hybrid_layers):
    cfg = BackboneConfig(img_size=32, patch_size=8, embed_dim=16, depth=2, num_heads=4, drop_rate=0.1,
                         hybrid_layers=hybrid_layers)
    model = build_vit(cfg, num_classes=5).train()
    dropouts = {name: m for name, m in model.named_modules() if isinstance(m, nn.Dropout)}
    active = {name for name, m in dropouts.items() if m.p > 0}
    assert active == {"pos_drop"} | {f"blocks.{i}.mlp.drop{j}" for i in range(2) for j in (1, 2)}
    assert all(REFERENCE_DROPOUT.fullmatch(name) for name in active)
    for block in model.blocks:  # none after the attention projection, none on the probabilities
        assert block.attn.proj_drop.p == 0 and block.attn.attn_drop.p == 0
    assert model.head_drop.p == 0 and isinstance(model.patch_drop, nn.Identity)
    assert all(p.drop_prob == 0 for p in model.modules() if hasattr(p, "drop_prob"))
    # and in a training forward the active ones are the ones that run
    ran = []
    for name, m in dropouts.items():
        m.register_forward_hook(lambda mod, i, o, name=name: ran.append(name) if mod.p > 0 else None)
    model(torch.randn(2, 3, 32, 32))
    assert sorted(ran) == sorted(active)


def test_geometry_zero_head_and_prefix_tokens():
    cfg = BackboneConfig(img_size=448, patch_size=32, embed_dim=16, depth=1, num_heads=2, extra_tokens=1)
    model = build_vit(cfg, num_classes=7).eval()
    assert cfg.grid_size == 14 and model.patch_embed.grid_size == (14, 14)
    assert model.pos_embed.shape == (1, 2 + 196, 16) and model.num_prefix_tokens == 2
    assert torch.count_nonzero(model.head.weight) == 0 and torch.count_nonzero(model.head.bias) == 0
    tokens = embed_tokens(model, torch.zeros(1, 3, 448, 448))
    assert torch.allclose(tokens[0, 0], model.cls_token[0, 0] + model.pos_embed[0, 0])
    assert torch.allclose(tokens[0, 1], model.reg_token[0, 0] + model.pos_embed[0, 1])
    assert torch.allclose(tokens[0, 2:], model.patch_embed(torch.zeros(1, 3, 448, 448))[0] + model.pos_embed[0, 2:])


def test_hybrid_stride_must_be_the_patch_size():
    assert BackboneConfig(img_size=224, hybrid_layers=(3, 4, 9)).hybrid_stride == 16
    with pytest.raises(UsageError, match="stride 16, but patch_size is 32"):
        BackboneConfig(img_size=224, patch_size=32, hybrid_layers=(3, 4, 9))
    assert PRESETS["base_r50"].backbone["hybrid_layers"] == (3, 4, 9) and PRESETS["base32"].backbone["patch_size"] == 32


def test_cell_ids_key_the_weights_by_content_not_by_path():
    specs = [parse_method_spec("vit")]

    def cell_id(pretrained):
        return build_cells(MatrixSpec(specs, ["demo"], [0], pretrained=pretrained))[0].cell_id

    here, moved = PretrainedFile("/a/vit.npz", "ab" * 32), PretrainedFile("/b/copy.npz", "ab" * 32)
    assert cell_id(here) == cell_id(moved)
    assert cell_id(here) != cell_id(PretrainedFile("/a/vit.npz", "cd" * 32)) != cell_id(None)


def test_every_adapter_exposes_the_attention_mode():
    for name in method_names():
        assert get_method(name).options["attention"] == "fused"
    adapter = get_method("vit")
    cfg = BackboneConfig(img_size=16, patch_size=8, embed_dim=8, depth=2, num_heads=2)
    recipe = build_cells(MatrixSpec([parse_method_spec("vit")], ["demo"], [0]))[0].recipe
    eager = adapter.create(3, cfg, adapter.resolve_options(None, {"attention": "eager"}), recipe)
    fused = adapter.create(3, cfg, adapter.resolve_options(None, {}), recipe)
    assert [b.attn.fused_attn for b in eager.vit.blocks] == [False, False]
    assert [b.attn.fused_attn for b in fused.vit.blocks] == [True, True]
    with pytest.raises(UsageError, match="must be one of fused, eager"):
        adapter.resolve_options(None, {"attention": "flash"})
