"""TransFG: part selection against the full rollout product, the contrastive loss against a double
loop, the overlapping patch embedding against a per-patch loop, and the whole model against a plain
transcription of the released code (float64, explicit maps, per-sample loop, same weights)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bench.errors import UsageError
from bench.recipe import Recipe
from methods import get_method
from methods.attention import LayerQK, fast, reference
from methods.backbone import BackboneConfig, build_vit
from methods.transfg import TransFGModel, contrastive_loss, part_indices
from jeonsworld import ReferenceViT
from test_ffvt import CountCalls, randn

pytestmark = pytest.mark.usefixtures("single_thread")

TINY = BackboneConfig(img_size=32, patch_size=8, embed_dim=32, depth=4, num_heads=4, drop_rate=0.0)


def random_layers(n_tokens=17, depth=3, batch=3, heads=4, width=8, seed=0):
    return [LayerQK(q=randn(batch, heads, n_tokens, width, seed=seed + 2 * i, scale=2),
                    k=randn(batch, heads, n_tokens, width, seed=seed + 2 * i + 1, scale=2), scale=width**-0.5)
            for i in range(depth)]


def part_attention(maps):
    """T:models/modeling.py Part_Attention: last_map = x[0]; last_map = x[i] @ last_map; row 0 without
    the CLS column; max over tokens; then the encoder's + 1."""
    last_map = maps[0]
    for i in range(1, len(maps)):
        last_map = torch.matmul(maps[i], last_map)
    last_map = last_map[:, :, 0, 1:]
    values, max_inx = last_map.max(2)
    return last_map, max_inx + 1


@pytest.mark.parametrize("depth", [1, 3])
def test_part_indices_equal_the_full_rollout_product(depth):
    for seed in range(4):
        layers = random_layers(depth=depth, seed=10 * seed)
        maps = [(l.q @ l.k.transpose(-2, -1) * l.scale).softmax(-1) for l in layers]
        row, want = part_attention(maps)
        assert (fast.rollout_row(layers)[:, :, 1:] - row).abs().max() <= 1e-12
        assert torch.equal(part_indices(layers, fast), want)
        assert torch.equal(part_indices(layers, reference), want)
        assert want.shape == (3, 4) and want.min() >= 1


def contrastive_double_loop(features, labels, margin=0.4):
    B = features.shape[0]
    total = features.new_zeros(())
    for i in range(B):
        for j in range(B):
            cos = features[i] @ features[j] / (features[i].norm() * features[j].norm())
            total = total + (1 - cos if labels[i] == labels[j] else torch.clamp(cos - margin, min=0))
    return total / (B * B)


def test_contrastive_loss_equals_a_double_loop_values_and_gradients():
    features = randn(6, 5, seed=3).requires_grad_()
    labels = torch.tensor([0, 1, 0, 2, 1, 1])
    got = contrastive_loss(features, labels)
    (g_got,) = torch.autograd.grad(got, features)
    want = contrastive_double_loop(features, labels)
    (g_want,) = torch.autograd.grad(want, features)
    assert got.dtype == torch.float64 and (got - want).abs() <= 1e-14
    assert (g_got - g_want).abs().max() <= 1e-14
    assert (contrastive_loss(features, labels, divisor="batch") - 6 * want).abs() <= 1e-13  # the first commit's /B
    assert (contrastive_loss(features, labels, margin=-1.0) - contrastive_double_loop(features, labels, -1.0)) \
        .abs() <= 1e-14


def test_contrastive_loss_special_cases():
    f = randn(1, 4)
    same = torch.cat([f, 2 * f])  # same direction, same label: cosine 1, loss 0
    assert contrastive_loss(same, torch.tensor([1, 1])).abs() <= 1e-15
    # different labels at cosine 0.4 or less give 0; above the margin they count, over B² = 4
    e0, e1 = torch.tensor([1.0, 0.0], dtype=torch.float64), torch.tensor([0.4, 0.84**0.5], dtype=torch.float64)
    assert contrastive_loss(torch.stack([e0, e1]), torch.tensor([0, 1])).abs() <= 1e-15
    e2 = torch.tensor([0.6, 0.8], dtype=torch.float64)
    assert (contrastive_loss(torch.stack([e0, e2]), torch.tensor([0, 1])) - 2 * 0.2 / 4).abs() <= 1e-15
    # the diagonal is a positive pair: one sample alone gives (1 - 1) / 1 = 0, two same-label
    # orthogonal ones give (0 + 1 + 1 + 0) / 4
    assert (contrastive_loss(torch.stack([e0, torch.tensor([0.0, 1.0], dtype=torch.float64)]),
                             torch.tensor([3, 3])) - 0.5).abs() <= 1e-15


def build(mode="fused", seed=0, backbone=TINY, **options) -> TransFGModel:
    adapter = get_method("transfg")
    opts = adapter.resolve_options(None, {"attention": mode, **options})
    torch.manual_seed(seed)
    model = adapter.create(5, adapter.configure_backbone(backbone, opts), opts, Recipe()).double()
    with torch.no_grad():  # larger logits than the default init's, so that the checks below can fail
        model.vit.head.weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
    return model


@pytest.mark.parametrize("split", ["non-overlap", "overlap"])
def test_a_seeded_build_draws_the_released_part_layer_and_head(split):
    """The released code never loads `part_layer` or `part_head` (`zero_head` is stored, never read):
    both keep the values its constructor drew from the seeded RNG. A seeded fgbench build holds the
    same values as the released constructor order under the same seed, and leaves the RNG where it
    leaves it."""
    adapter = get_method("transfg")
    opts = adapter.resolve_options(None, {"split": split, "slide_step": 6})
    backbone = adapter.configure_backbone(TINY, opts)
    torch.manual_seed(11)
    vit = adapter.create(5, backbone, opts, Recipe()).vit
    after_build = torch.random.get_rng_state()
    torch.manual_seed(11)
    ref = ReferenceViT(32, 4, 128, TINY.depth, 8, backbone.stride, backbone.num_patches, 5)
    assert torch.equal(torch.random.get_rng_state(), after_build)
    want, got = ref.timm_state(), vit.state_dict()
    fresh = [k for k in want if k.startswith((f"blocks.{TINY.depth - 1}.", "head."))]
    assert len(fresh) == 14 and torch.count_nonzero(got["head.weight"]) > 0
    for key in fresh:
        assert torch.equal(got[key], want[key]), key
    zero = adapter.create(5, backbone, adapter.resolve_options(None, {"head_init": "zero"}), Recipe()).vit
    assert torch.count_nonzero(zero.head.weight) == 0 and torch.count_nonzero(zero.head.bias) == 0


def reference_transfg(ref: ReferenceViT, x, labels):
    """T:models/modeling.py:253-310, 364-375: 11 (here 3) blocks, Part_Attention, per-sample gather,
    part layer, part norm, part head, CE + con_loss."""
    hidden = ref.embed(x)
    weights = []
    for block in ref.blocks[:-1]:
        hidden, w, _ = block(hidden)
        weights.append(w)
    _, part_inx = part_attention(weights)
    parts = torch.stack([hidden[i, part_inx[i, :]] for i in range(x.shape[0])]).squeeze(1)
    concat = torch.cat((hidden[:, 0].unsqueeze(1), parts), dim=1)
    part_tokens = ref.norm(ref.blocks[-1](concat)[0])
    logits = ref.head(part_tokens[:, 0])
    return logits, F.cross_entropy(logits, labels) + contrastive_double_loop(part_tokens[:, 0], labels), part_inx


@pytest.mark.parametrize("mode", ["fused", "eager"])
@pytest.mark.parametrize("split", ["non-overlap", "overlap"])
def test_logits_and_every_gradient_equal_the_released_code(mode, split):
    model = build(mode, split=split, slide_step=6).train()  # overlap: stride 6 < patch 8, a 5 x 5 grid
    assert model.vit.patch_embed.num_patches == (16 if split == "non-overlap" else 25)
    ref = ReferenceViT.from_timm(model.vit).train()
    x, y = randn(4, 3, 32, 32, seed=7), torch.tensor([0, 3, 3, 1])

    with CountCalls() as counter:
        out = model(x, y)
    out["loss"].backward()
    assert counter.calls["sdpa"] == (TINY.depth if mode == "fused" else 0)

    logits, loss, part_inx = reference_transfg(ref, x, y)
    loss.backward()
    assert torch.equal(model.parts(x)[1], part_inx)
    assert (out["logits"] - logits).abs().max() <= 1e-10
    assert (out["loss"] - loss).abs() <= 1e-12
    assert set(out["losses"]) == {"ce", "contrastive"} and out["losses"]["contrastive"] > 0
    ref.assert_same_grads(model.vit)


def test_part_layer_input_is_cls_then_one_token_per_head():
    model = build().eval()
    x = randn(3, 3, 32, 32, seed=2)
    with torch.no_grad():
        tokens, idx = model.parts(x)
        hidden = model.vit.blocks[:-1](model.vit._pos_embed(model.vit.patch_embed(x)))
    assert tokens.shape == (3, 1 + TINY.num_heads, 32) and idx.shape == (3, TINY.num_heads)
    assert torch.equal(tokens[:, 0], hidden[:, 0])
    for b in range(3):
        assert torch.equal(tokens[b, 1:], hidden[b, idx[b]])
    without = build(contrastive=False).train()
    assert set(without(x, torch.tensor([0, 1, 2]))["losses"]) == {"ce"}


def test_overlapping_patch_embedding_is_a_strided_convolution_over_overlapping_patches():
    cfg = BackboneConfig(img_size=48, patch_size=16, embed_dim=8, depth=1, num_heads=2, patch_stride=12)
    assert cfg.grid_size == 3 and cfg.num_patches == 9  # (48 - 16) // 12 + 1: the last 8 pixels are unused
    assert BackboneConfig(img_size=448, patch_stride=12).grid_size == 37  # 1369 patches, as the write-up
    assert BackboneConfig(img_size=448).grid_size == 28
    vit = build_vit(cfg, num_classes=2).double()
    x = randn(2, 3, 48, 48)
    got = vit.patch_embed(x)
    conv = vit.patch_embed.proj
    for r in range(3):
        for c in range(3):
            patch = x[:, :, 12 * r: 12 * r + 16, 12 * c: 12 * c + 16]
            want = torch.einsum("bchw,ochw->bo", patch, conv.weight) + conv.bias
            assert (got[:, 3 * r + c] - want).abs().max() <= 1e-12
    assert vit.pos_embed.shape == (1, 10, 8)
    with pytest.raises(UsageError, match="patch_stride must be between 1 and the patch size 16"):
        BackboneConfig(img_size=448, patch_stride=17)
    with pytest.raises(UsageError, match="need the linear patch embedding"):
        BackboneConfig(img_size=224, hybrid_layers=(3, 4, 9), patch_stride=12)
