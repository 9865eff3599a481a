"""FFVT's and TransFG's new last block and final norm: what comes from the checkpoint, what starts
fresh (with the reference init), and what the load report says."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bench.recipe import Recipe
from google_layout import vit_arrays, write_npz
from jeonsworld import ReferenceResNetV2, ReferenceViT
from methods import get_method, parse_method_spec
from methods.backbone import BackboneConfig, create_vit
from methods.pretrained import PretrainedFile

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def backbone(tmp_path_factory) -> BackboneConfig:
    path = write_npz(tmp_path_factory.mktemp("weights") / "ViT-tiny.npz",
                     vit_arrays(np.random.default_rng(0), patch=8, dim=16, depth=3, heads=4, grid=4))
    return BackboneConfig(img_size=32, patch_size=8, embed_dim=16, depth=3, num_heads=4, drop_rate=0.0,
                          pretrained=PretrainedFile.from_path(path))


def create(spec: str, backbone: BackboneConfig, **overrides):
    adapter, variant = parse_method_spec(spec)
    options = adapter.resolve_options(variant, overrides)
    return adapter.create(5, adapter.configure_backbone(backbone, options), options, Recipe())


@pytest.mark.parametrize("spec, overrides, keep_block, keep_norm", [
    ("ffvt", {}, False, False),  # the released code: both fresh
    ("ffvt:bmvc", {}, False, True),  # commit 51ee006 loaded encoder_norm into ff_encoder_norm
    ("ffvt", {"pretrained_last_block": True}, True, False),
    ("transfg", {}, False, True),  # part_norm from encoder_norm since ff28b58
    ("transfg:initial", {}, False, False),
    ("transfg", {"pretrained_last_block": True, "load_final_norm": False}, True, False),
])
def test_last_block_and_final_norm_follow_the_options(backbone, spec, overrides, keep_block, keep_norm):
    loaded = create_vit(backbone, 5).state_dict()  # every tensor from the file
    torch.manual_seed(0)
    model = create(spec, backbone, **overrides)
    state = model.vit.state_dict()
    fresh = set()
    for key, value in loaded.items():
        if key.startswith("head."):  # FFVT zeroes its head; TransFG's keeps PyTorch's Linear init
            assert (torch.count_nonzero(state[key]) == 0) == spec.startswith("ffvt"), key
            continue
        keep = keep_block if key.startswith("blocks.2.") else keep_norm if key.startswith("norm.") else True
        assert torch.equal(state[key], value) == keep, key
        if not keep:
            fresh.add(key)
    assert any(k.startswith("blocks.2.") for k in fresh) != keep_block
    if not keep_norm:
        assert torch.equal(state["norm.weight"], torch.ones(16)) and torch.equal(state["norm.bias"], torch.zeros(16))
    report = model.vit.pretrained_report
    assert fresh <= set(report.initialised) and not fresh & set(report.loaded)
    assert set(report.loaded) == set(loaded) - fresh - {"head.weight", "head.bias"}


def test_variants_are_the_documented_commits():
    assert get_method("ffvt").resolve_options("bmvc")["load_final_norm"] is True
    initial = get_method("transfg").resolve_options("initial")
    assert initial["load_final_norm"] is False and initial["contrastive_divisor"] == "batch"
    assert get_method("transfg").resolve_options("overlap")["split"] == "overlap"


@pytest.mark.parametrize("method", ["ffvt", "transfg"])
def test_a_fresh_last_block_has_the_reference_init(method):
    """Attention Linears at PyTorch's default U(±1/sqrt(D)), MLP xavier-uniform weights and N(0, 1e-6)
    biases, LayerNorms at 1 and 0 (F:models/modeling.py:136-140); the other blocks keep timm's init."""
    D = 64
    cfg = BackboneConfig(img_size=32, patch_size=8, embed_dim=D, depth=2, num_heads=4)
    torch.manual_seed(0)
    model = create(method, cfg)
    new, old = model.vit.blocks[-1], model.vit.blocks[0]
    for norm in (new.norm1, new.norm2):
        assert torch.equal(norm.weight, torch.ones(D)) and torch.equal(norm.bias, torch.zeros(D))
    bound = 1 / math.sqrt(D)
    for linear in (new.attn.qkv, new.attn.proj):
        assert 0.95 * bound < linear.weight.abs().max() <= bound
        assert 0.5 * bound < linear.bias.abs().max() <= bound
    for fc in (new.mlp.fc1, new.mlp.fc2):
        xavier = math.sqrt(6 / (fc.in_features + fc.out_features))
        assert 0.95 * xavier < fc.weight.abs().max() <= xavier
        assert 0 < fc.bias.abs().max() < 1e-4 and abs(fc.bias.std().item() - 1e-6) < 3e-7
    assert torch.count_nonzero(old.mlp.fc1.bias) == 0  # timm's init elsewhere (zero biases)


@pytest.mark.parametrize("method, hybrid", [("ffvt", False), ("ffvt", True), ("transfg", False)])
def test_a_seeded_build_draws_the_released_new_block(method, hybrid):
    """The released code seeds, then builds: its new block keeps the values drawn at its place in the
    constructor order (FFVT: `ff_last_layer` right after the embedding, a hybrid's ResNet first;
    TransFG: `part_layer` after the encoder blocks). A seeded build here holds the same values and
    leaves the RNG where the released constructor does."""
    D, depth = 32, 3
    cfg = BackboneConfig(img_size=32, patch_size=16 if hybrid else 8, embed_dim=D, depth=depth, num_heads=4,
                         hybrid_layers=(1, 1, 1) if hybrid else ())
    torch.manual_seed(5)
    model = create(method, cfg, **({"num_tokens": 2} if method == "ffvt" else {}))
    after_build = torch.random.get_rng_state()
    torch.manual_seed(5)
    if hybrid:
        ReferenceResNetV2((1, 1, 1))
    ref = ReferenceViT(D, 4, 4 * D, depth, 1 if hybrid else 8, 1 if hybrid else 8, cfg.num_patches, 5,
                       in_chans=1024 if hybrid else 3)
    assert torch.equal(torch.random.get_rng_state(), after_build)
    released = 0 if method == "ffvt" else depth - 1  # where the released constructor built the new block
    want, got = ref.timm_state(), model.vit.state_dict()
    for key in [k for k in want if k.startswith(f"blocks.{released}.")]:
        assert torch.equal(got[key.replace(f"blocks.{released}.", f"blocks.{depth - 1}.")], want[key]), key
    head = got["head.weight"]
    assert torch.equal(head, want["head.weight"]) if method == "transfg" else torch.count_nonzero(head) == 0


def test_the_overlapping_split_loads_the_checkpoint_kernel_and_resizes_the_positions(backbone):
    plain = create_vit(backbone, 5).state_dict()
    model = create("transfg:overlap", backbone, slide_step=6)  # stride 6 < patch 8: a 5 x 5 grid at 32 px
    state = model.vit.state_dict()
    assert model.vit.patch_embed.proj.stride == (6, 6)
    assert torch.equal(state["patch_embed.proj.weight"], plain["patch_embed.proj.weight"])
    assert state["pos_embed"].shape == (1, 1 + 25, 16)
    assert torch.equal(state["pos_embed"][:, 0], plain["pos_embed"][:, 0])
    assert model.vit.pretrained_report.adapted["pos_embed grid"] == "4x4 -> 5x5 (bilinear)"
