"""Mix-ViT's part model: grouping, shaping loss, part positions and the training forward against
transcriptions of the released code (models/grouping.py, utils/loss.py, models/modeling.py,
train.py at 1be7032; the loss as in interpretability-by-parts src/common/loss.py), in float64.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from bench.errors import UsageError
from bench.recipe import Recipe
from google_layout import hybrid_arrays, write_npz
from methods import get_method
from methods.backbone import BackboneConfig, build_vit, create_vit
from methods.grouping import GroupingUnit, ShapingLoss, gaussian_kernel
from methods.mixvit_parts import MixViTParts, part_positions
from methods.pretrained import PretrainedFile

pytestmark = pytest.mark.usefixtures("single_thread")

# one ResNetV2 stage per stride step (stride 8 = patch 8), a 5 x 5 map at 40 px: the smallest the
# 5 x 5 blur without padding accepts
TINY = BackboneConfig(img_size=40, patch_size=8, embed_dim=16, depth=2, num_heads=2, drop_rate=0.0,
                      hybrid_layers=(1, 1))


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------ transcriptions


def original_grouping(inputs, weight, smooth_factor):
    """GroupingUnit.forward (models/grouping.py) verbatim; weight is the original's (K, C, 1, 1)."""
    num_parts, in_channels = weight.shape[:2]
    batch_size, _, input_h, input_w = inputs.shape
    grouping_centers = weight.contiguous().view(1, num_parts, in_channels).expand(batch_size, num_parts, in_channels)
    inputs_cx = inputs.contiguous().view(batch_size, in_channels, input_h * input_w)
    cx_ = torch.bmm(grouping_centers, inputs_cx)
    cx = cx_.contiguous().view(batch_size, num_parts, input_h, input_w)
    x_sq = inputs.pow(2).sum(1, keepdim=True).expand(-1, num_parts, -1, -1)
    c_sq = grouping_centers.pow(2).sum(2).unsqueeze(2).unsqueeze(3).expand(-1, -1, input_h, input_w)
    beta = torch.sigmoid(smooth_factor)
    beta_batch = beta.unsqueeze(0).unsqueeze(2).unsqueeze(3).expand(batch_size, -1, input_h, input_w)
    assign = (2 * cx - x_sq - c_sq).clamp(max=0.0) / beta_batch
    assign = F.softmax(assign, dim=1)
    x = inputs.contiguous().view(batch_size, in_channels, -1).permute(0, 2, 1)
    assign = assign.contiguous().view(batch_size, num_parts, -1)
    qx = torch.bmm(assign, x)
    sum_ass = torch.sum(assign, dim=2, keepdim=True).expand(-1, -1, in_channels).clamp(min=1e-5)
    sigma = (beta / 2).sqrt()
    out = ((qx / sum_ass) - grouping_centers) / sigma.unsqueeze(0).unsqueeze(2)
    assign = assign.contiguous().view(batch_size, num_parts, input_h, input_w)
    return F.normalize(out, dim=2).permute(0, 2, 1), assign


def shaping_numpy(assign, radius=2, std=0.4, alpha=1.0, beta=0.001, eps=1e-5):
    """ShapingLoss with explicit loops: kernel, valid cross-correlation, spatial max, batch sort, prior."""
    a = assign.detach().double().numpy()
    B, K, H, W = a.shape
    size = 2 * radius + 1
    kernel = np.ones((size, size))
    for i in range(-radius, radius + 1):
        for j in range(-radius, radius + 1):
            kernel[i + radius][j + radius] = np.exp(-(i * i + j * j) / (2 * std * std))
    kernel /= kernel.sum()
    blurred = np.zeros((B, K, H - 2 * radius, W - 2 * radius))
    for b in range(B):
        for k in range(K):
            for y in range(H - 2 * radius):
                for x in range(W - 2 * radius):
                    blurred[b, k, y, x] = (a[b, k, y:y + size, x:x + size] * kernel).sum()
    occurrence = blurred.max(axis=(2, 3))
    empirical = np.sort(occurrence, axis=0)
    prior = stats.beta.ppf(np.arange(1.0, 2 * B, 2.0) / (2 * B), a=alpha, b=beta)[:, None]
    return np.abs(np.log(empirical + eps) - np.log(prior + eps)).mean()


def reference_training_forward(model: MixViTParts, x, labels, seed, topk, weights=(0.5, 1.0, 1.0)):
    """build_transformer + VisionTransformer.forward + train.py's loss, on the model's modules and
    parameters: original grouping, 1x1 part embedding, explicit last-block map, `generate_masks` of
    the part model, the in-place loop, labels by loop, the four terms."""
    vit = model.vit
    features = vit.patch_embed.backbone(x)
    K, C = model.grouping.centers.shape
    parts, assign = original_grouping(features, model.grouping.centers.view(K, C, 1, 1), model.grouping.smooth_factor)
    e = vit.patch_embed.proj(parts.unsqueeze(-1)).flatten(2).transpose(-1, -2)
    h = torch.cat((vit.cls_token.expand(x.shape[0], -1, -1), e), dim=1) + vit.pos_embed
    for i, block in enumerate(vit.blocks):
        if i == len(vit.blocks) - 1:
            pre = h.clone()
        B, N, D = h.shape
        heads = block.attn.num_heads
        qkv = block.attn.qkv(block.norm1(h)).reshape(B, N, 3, heads, D // heads).permute(2, 0, 3, 1, 4)
        attn = (torch.matmul(qkv[0], qkv[1].transpose(-1, -2)) / math.sqrt(D // heads)).softmax(dim=-1)
        h = block(h)
    logits = vit.head(vit.norm(h)[:, 0])
    scores = attn[:, :, 0, :].mean(1)  # generate_masks of the part model (models/modeling.py)
    _, idx = torch.topk(scores, int(topk * attn.shape[-1]), dim=1)
    torch.manual_seed(seed)
    for j in range(B):
        k = torch.randint(0, B, (1, 1)).flatten().item()
        while k == j:
            k = torch.randint(0, B, (1, 1)).flatten().item()
        pre[j, idx[j, :], :] = pre[k, idx[k, :], :]
    mask_x = model.mask.norm(model.mask.block(pre))
    mask_labels = torch.zeros(B, vit.patch_embed.num_patches + 1, dtype=pre.dtype)
    for i in range(B):
        mask_labels[i, idx[i, :]] = 1
    bce = torch.nn.BCEWithLogitsLoss()(model.mask.head(mask_x[:, 0]), mask_labels)
    mask_ce = torch.nn.CrossEntropyLoss()(model.mask_cls_head(mask_x[:, 0]), labels)
    ce = torch.nn.CrossEntropyLoss()(logits, labels)
    shaping = shaping_numpy(assign)
    shape_w, cls_w, mask_w = weights
    return {"ce": ce, "shaping": shape_w * shaping, "mask_ce": cls_w * mask_ce, "bce": mask_w * bce}, idx, pre


# ------------------------------------------------------------------------------------------ grouping


def test_grouping_equals_the_original_and_has_its_invariants():
    torch.manual_seed(0)
    unit = GroupingUnit(12, 4).double()
    with torch.no_grad():
        unit.smooth_factor.normal_(0.0, 1.0, generator=gen(1))
    features = torch.randn(3, 12, 5, 6, generator=gen(2), dtype=torch.float64) * 0.3
    parts, assign = unit(features)
    want_parts, want_assign = original_grouping(features, unit.centers.view(4, 12, 1, 1), unit.smooth_factor)
    torch.testing.assert_close(parts, want_parts, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(assign, want_assign, rtol=1e-12, atol=1e-12)
    assert parts.shape == (3, 12, 4) and assign.shape == (3, 4, 5, 6)
    torch.testing.assert_close(assign.sum(1), torch.ones(3, 5, 6, dtype=torch.float64))
    torch.testing.assert_close(parts.norm(dim=1), torch.ones(3, 4, dtype=torch.float64))
    # one position by hand: softmax_k(min(0, -|x - c_k|²) / beta_k)
    x, c = features[1, :, 2, 3], unit.centers
    logits = (-(x[None] - c).pow(2).sum(1)).clamp(max=0) / torch.sigmoid(unit.smooth_factor)
    torch.testing.assert_close(assign[1, :, 2, 3], logits.softmax(0))


def test_grouping_init_and_precision():
    torch.manual_seed(0)
    unit = GroupingUnit(64, 5)
    assert unit.centers.min() >= 1e-5 and torch.equal(unit.smooth_factor, torch.zeros(5))
    features = torch.randn(2, 64, 5, 5, generator=gen(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        parts, assign = unit(features)
    assert parts.dtype == assign.dtype == torch.float32
    torch.testing.assert_close(parts, unit(features)[0])


def test_shaping_loss_equals_the_loop_transcription():
    assign = torch.rand(4, 3, 7, 8, generator=gen(4), dtype=torch.float64).softmax(1)
    loss = ShapingLoss()
    torch.testing.assert_close(loss(assign).item(), shaping_numpy(assign), rtol=1e-12, atol=0)
    assert loss.prior(4, torch.device("cpu")) is loss.prior(4, torch.device("cpu"))  # cached, unlike the original
    with pytest.raises(ValueError, match="too small"):
        loss(assign[..., :4, :])


def test_gaussian_kernel_is_the_originals():
    r, std = 2, 0.4
    want = torch.ones(5, 5, dtype=torch.float64)
    for i in range(-r, r + 1):
        for j in range(-r, r + 1):
            want[i + r][j + r] = np.exp(-(i * i + j * j) / (2 * std * std))
    torch.testing.assert_close(gaussian_kernel(r, std), want / want.sum(), rtol=1e-14, atol=0)


# ------------------------------------------------------------------------------------------ positions


def test_part_positions_resize_the_checkpoint_grid(tmp_path):
    rng = np.random.default_rng(0)
    backbone = build_vit(TINY, 5).patch_embed.backbone
    arrays = hybrid_arrays(rng, backbone, dim=16, depth=3, heads=2, grid=3)  # 3 blocks: the model keeps 2
    path = write_npz(tmp_path / "R50-tiny.npz", arrays)
    cfg = BackboneConfig(**{**TINY.__dict__, "pretrained": PretrainedFile.from_path(path)})
    adapter = get_method("mixvit_parts")
    model = adapter.build(5, cfg, adapter.resolve_options(None), Recipe())
    raw = torch.from_numpy(arrays["Transformer/posembed_input/pos_embedding"]).double()
    grid = raw[:, 1:].reshape(1, 3, 3, -1).permute(0, 3, 1, 2)
    want = F.interpolate(grid, size=(5, 1), mode="bilinear").permute(0, 2, 3, 1).reshape(1, 5, -1)
    torch.testing.assert_close(model.vit.pos_embed.double(), torch.cat([raw[:, :1], want], 1), rtol=1e-6, atol=1e-7)
    # not the resample of the grid the loader stretched to the run's 5 x 5
    loaded = create_vit(cfg, 5).pos_embed.detach()
    assert not torch.allclose(model.vit.pos_embed, part_positions(loaded, 5).float(), atol=1e-4)
    assert any(key.startswith("blocks.2.") for key in model.vit.pretrained_report.skipped)  # the third block
    # the record names the resize the model really got, not the loader's stretch to 5 x 5
    assert model.vit.pretrained_report.adapted["pos_embed grid"].startswith("3x3 -> 5x1 part positions")
    with pytest.raises(UsageError, match="--pos-embed-resize bicubic does not apply"):
        adapter.check_backbone(BackboneConfig(**{**cfg.__dict__, "pos_embed_resize": "bicubic"}))


# ------------------------------------------------------------------------------------------ the model


def build(seed=0, **options):
    adapter = get_method("mixvit_parts")
    opts = adapter.resolve_options(None, options)
    cfg = adapter.configure_backbone(TINY, opts)
    torch.manual_seed(seed)
    model = adapter.create(5, cfg, opts, Recipe()).double()
    with torch.no_grad():
        for block in model.vit.blocks:
            block.attn.qkv.weight.mul_(6.0)
        model.vit.head.weight.normal_(0.0, 0.5, generator=gen(seed + 1))
    return model


def images(B=4, seed=0):
    return torch.randn(B, 3, 40, 40, generator=gen(seed), dtype=torch.float64)


@pytest.mark.parametrize("attention", ["fused", "eager"])
def test_training_forward_equals_the_transcribed_original(attention):
    model = build(mask_topk=0.5, mask_weight=4.0, mask_cls_weight=0.7, attention=attention).train()
    x, labels = images(), torch.tensor([0, 3, 1, 4])
    seen = {}
    model.mask.block.register_forward_pre_hook(lambda mod, args: seen.setdefault("mixed", args[0].detach()))
    torch.manual_seed(5)
    out = model(x, labels)
    want, idx, mixed = reference_training_forward(model, x, labels, seed=5, topk=0.5, weights=(0.5, 0.7, 4.0))
    assert idx.shape == (4, 3) and model.mask.head.out_features == TINY.num_patches + 1 == 26
    torch.testing.assert_close(seen["mixed"], mixed.detach(), rtol=0, atol=1e-12)
    assert set(out["losses"]) == set(want)
    for name, value in want.items():
        torch.testing.assert_close(out["losses"][name].double(), torch.as_tensor(value, dtype=torch.float64),
                                   rtol=1e-9, atol=0, msg=name)
    torch.testing.assert_close(out["loss"], sum(out["losses"].values()), rtol=1e-12, atol=0)


def test_selection_ranges_over_the_class_token_too():
    """k = int(0.2 * 6) = 1 position of the 6 tokens; the class token is a candidate (the original's
    selection has no `1:` slice), so it is substituted whenever it is the most attended."""
    model = build(chained=False)  # every sample takes its partner's tokens (no 2-cycle returns its own)
    assert model.num_selected == 1
    qkv = model.vit.blocks[-1].attn.qkv
    D = model.vit.embed_dim
    with torch.no_grad():  # q = k = 3x (normalised token): every token attends most to itself, CLS included
        qkv.weight[: 2 * D] = 3.0 * torch.eye(D, dtype=qkv.weight.dtype).repeat(2, 1)
        qkv.bias[: 2 * D] = 0.0
    seen = {}
    model.mask.block.register_forward_pre_hook(lambda mod, args: seen.setdefault("mixed", args[0].detach()))
    torch.manual_seed(0)
    model.train()(images(), torch.tensor([0, 1, 2, 3]))
    x, _ = model.embed(images())
    hidden = model.vit.blocks[:-1](x)
    changed = (seen["mixed"] != hidden).any(-1)  # [B, tokens]
    assert changed[:, 0].all() and not changed[:, 1:].any()


def test_eval_is_the_main_branch_only_and_draws_no_random_numbers():
    model = build().eval()
    x = images(seed=3)
    state = torch.get_rng_state()
    logits = model(x)["logits"]
    assert set(model(x, torch.tensor([0, 1, 2, 3]))["losses"]) == {"ce"}
    assert torch.equal(torch.get_rng_state(), state)
    del model.mask, model.mask_cls_head, model.shaping
    torch.testing.assert_close(model(x)["logits"], logits, rtol=0, atol=0)


def test_batch_of_one_skips_mixing_but_touches_every_parameter():
    model = build().train()
    out = model(images(B=1), torch.tensor([2]))
    assert out["losses"]["bce"] == 0 and out["losses"]["mask_ce"] == 0
    out["loss"].backward()
    assert all(p.grad is not None for p in model.parameters())


def test_optimizer_groups_are_the_originals():
    model = build()
    adapter = get_method("mixvit_parts")
    groups = {g["lr_scale"]: {id(p) for p in g["params"]} for g in adapter.param_groups(model, Recipe())}
    ids = lambda module: {id(p) for p in module.parameters()}  # noqa: E731
    vit = model.vit
    assert groups[1.0] == ids(vit.patch_embed.backbone)
    assert groups[5.0] == ids(model.grouping)
    assert groups[20.0] == ids(vit.head) | ids(model.mask.head) | ids(model.mask_cls_head)
    transformer = (ids(vit.patch_embed.proj) | ids(vit.blocks) | ids(vit.norm) | {id(vit.cls_token), id(vit.pos_embed)}
                   | ids(model.mask.block) | ids(model.mask.norm))
    assert groups[10.0] == transformer
    assert sum(map(len, groups.values())) == len(list(model.parameters()))
    single = build(module_lr=False)
    assert [len(g["params"]) for g in adapter.param_groups(single, Recipe())] == [len(list(single.parameters()))]


def test_backbone_is_the_r50_stem_and_two_blocks():
    adapter = get_method("mixvit_parts")
    opts = adapter.resolve_options(None)
    tiny = adapter.configure_backbone(BackboneConfig(img_size=64, patch_size=8, embed_dim=64, depth=4, num_heads=4), opts)
    assert tiny.hybrid_layers == (3, 4) and tiny.depth == 2
    base = adapter.configure_backbone(BackboneConfig(img_size=448, hybrid_layers=(3, 4, 9)), opts)
    assert base.hybrid_layers == (3, 4, 9) and base.depth == 2 and base.grid_size == 28
    with pytest.raises(UsageError, match="patch size of 4, 8 or 16"):
        adapter.configure_backbone(BackboneConfig(img_size=64, patch_size=32), opts)
    with pytest.raises(UsageError, match="at least 40"):
        adapter.check_backbone(adapter.configure_backbone(BackboneConfig(img_size=32, patch_size=8), opts))
    with pytest.raises(UsageError, match="num_parts=30 exceeds the 25 patches"):  # 40 px / 8: a 5 x 5 grid
        adapter.configure_backbone(BackboneConfig(img_size=40, patch_size=8), adapter.resolve_options(None, {"num_parts": 30}))
    assert adapter.configure_backbone(BackboneConfig(img_size=40, patch_size=8),
                                      adapter.resolve_options("clean", {"num_parts": 30})).depth == 2  # head sized by tokens


def test_options_per_dataset_and_bad_values():
    adapter = get_method("mixvit_parts")
    assert adapter.resolve_options(None, dataset="soyageing_r1")["mask_cls_weight"] == 0.0
    assert adapter.resolve_options(None, dataset="cotton")["mask_weight"] == 4.0
    assert adapter.resolve_options("clean")["mask_head_width"] == "tokens"
    assert build(mask_head_width="tokens").mask.head.out_features == 6
    for bad, message in (({"num_parts": 0}, "num_parts must be"), ({"mask_head_width": "P+2"}, "grid\\+1, tokens"),
                         ({"shaping_weight": -1.0}, "shaping_weight must be >= 0")):
        with pytest.raises(UsageError, match=message):
            adapter.resolve_options(None, bad)
