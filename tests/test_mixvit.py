"""Mix-ViT: selection, partners, substitution and the training forward against transcriptions of the
released code (mixvit_purevit/models/modeling.py: `generate_masks`, `MaskTransformer.forward`,
`VisionTransformer.forward`), in float64 with explicit maps, full products and per-sample loops.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from bench.errors import UsageError
from bench.matrix import MatrixSpec, build_cells
from bench.recipe import Recipe
from cuda_sync import assert_second_step_does_not_sync, needs_cuda
from methods import get_method, mixvit
from methods.attention import LayerQK, reference, set_attention_mode
from methods.backbone import BackboneConfig, embed_tokens
from methods.mixvit import (
    MixViT,
    chained_sources,
    draw_partners,
    num_selected,
    substitute,
    token_scores,
)

pytestmark = pytest.mark.usefixtures("single_thread")

# the write-up's tiny check configuration (§10): 16 patches, N = 17, k = int(0.25 * 16) = 4
TINY = BackboneConfig(img_size=16, patch_size=4, embed_dim=16, depth=3, num_heads=2, drop_rate=0.0)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------ transcriptions


def generate_masks(weights, contributions, topk):
    """`generate_masks` (PV/modeling.py:505-517) verbatim: full products, later layers on the left."""
    weights, contributions = torch.stack(weights), torch.stack(contributions)
    w_last_map = weights[0]
    c_last_map = contributions[0]
    for i in range(1, len(weights)):
        w_last_map = torch.matmul(weights[i], w_last_map)
        c_last_map = torch.matmul(contributions[i], c_last_map)
    n_patches = w_last_map.shape[-1]
    weights = w_last_map[:, :, 0, 1:].mean(1)
    contribution = c_last_map[:, :, 1:, 0].mean(1)
    scores = weights * contribution
    _, max_inx = torch.topk(scores, int(topk * (n_patches - 1)), dim=1)
    return scores, max_inx


def maps_from_qk(q, k):
    """The original Attention's two maps: softmax of q kᵀ / sqrt(d) over keys and over queries."""
    scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    return scores.softmax(dim=-1), scores.softmax(dim=-2)


def partner_loop(B):
    """`MaskTransformer.forward`'s draws (PV/modeling.py:292-298)."""
    out = []
    for j in range(B):
        k = torch.randint(0, B, (1, 1)).flatten().item()
        while k == j:
            k = torch.randint(0, B, (1, 1)).flatten().item()
        out.append(k)
    return out


def sequential_substitution(x, positions, partners):
    """The released in-place loop: x[j, idx_j] = x[k, idx_k] for j = 0..B-1, on a clone."""
    x = x.clone()
    for j, k in enumerate(partners):
        x[j, positions[j, :], :] = x[k, positions[k, :], :]
    return x


def clean_substitution(x, positions, partners):
    """The paper's description: every sample takes its partner's *original* tokens."""
    out = x.clone()
    for j, k in enumerate(partners):
        out[j, positions[j, :], :] = x[k, positions[k, :], :]
    return out


def random_indices(B, P, k, seed):
    g = gen(seed)
    return torch.stack([torch.randperm(P, generator=g)[:k] for _ in range(B)])


# ------------------------------------------------------------------------------------------ selection


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scores_and_topk_equal_the_full_matrix_rollout(seed):
    B, H, N, d, L = 3, 2, 17, 8, 4
    g = gen(seed)
    qs = [torch.randn(B, H, N, d, generator=g, dtype=torch.float64) * 2 for _ in range(L)]
    ks = [torch.randn(B, H, N, d, generator=g, dtype=torch.float64) * 2 for _ in range(L)]
    maps = [maps_from_qk(q, k) for q, k in zip(qs, ks)]
    want_scores, want_idx = generate_masks([m[0] for m in maps], [m[1] for m in maps], 0.25)
    got = token_scores(qs, ks)
    assert got.shape == (B, N - 1) and got.dtype == torch.float64
    torch.testing.assert_close(got, want_scores, rtol=1e-10, atol=0)
    k = num_selected(0.25, N - 1)
    assert k == 4 and torch.equal(mixvit.select_tokens(got, k), want_idx)  # same tokens, same rank order
    layers = [LayerQK(q=q, k=k_, scale=d**-0.5) for q, k_ in zip(qs, ks)]
    torch.testing.assert_close(mixvit.patch_scores(layers, reference), want_scores, rtol=1e-12, atol=0)


def test_scores_use_every_layer_in_the_originals_order():
    g = gen(5)
    qs = [torch.randn(2, 2, 9, 4, generator=g, dtype=torch.float64) * 2 for _ in range(3)]
    ks = [torch.randn(2, 2, 9, 4, generator=g, dtype=torch.float64) * 2 for _ in range(3)]
    maps = [maps_from_qk(q, k) for q, k in zip(qs, ks)]
    reversed_order, _ = generate_masks([m[0] for m in maps[::-1]], [m[1] for m in maps[::-1]], 0.25)
    without_last, _ = generate_masks([m[0] for m in maps[:-1]], [m[1] for m in maps[:-1]], 0.25)
    for wrong in (reversed_order, without_last):
        assert not torch.allclose(token_scores(qs, ks), wrong, atol=1e-6)


@pytest.mark.parametrize("ratio, patches, k", [(0.2, 784, 156), (0.1, 784, 78), (0.2, 6, 1), (0.02, 6, 0),
                                               (0.25, 16, 4), (0.2, 64, 12)])
def test_k_is_the_truncated_float_product(ratio, patches, k):
    assert num_selected(ratio, patches) == k


def test_model_selects_k_of_its_patch_grid():
    adapter = get_method("mixvit")
    for img, ratio, k in ((448, 0.2, 156), (448, 0.1, 78), (16, 0.25, 4)):
        cfg = BackboneConfig(img_size=img, patch_size=16 if img == 448 else 4, embed_dim=8, depth=2, num_heads=1)
        model = adapter.build(3, cfg, adapter.resolve_options(None, {"mask_topk": ratio}), Recipe())
        assert model.num_selected == k and model.mask.head.out_features == cfg.num_patches + 2


# ------------------------------------------------------------------------------------------ partners


@pytest.mark.parametrize("B", [2, 3, 8])
def test_partner_draws_equal_the_reference_loop_and_never_pick_self(B):
    for seed in range(20):
        torch.manual_seed(seed)
        want = partner_loop(B)
        after_reference = torch.get_rng_state()
        torch.manual_seed(seed)
        got = draw_partners(B)
        assert got == want and all(p != j for j, p in enumerate(got))
        assert torch.equal(torch.get_rng_state(), after_reference)  # same number of draws


def test_a_batch_of_one_has_no_partner():
    with pytest.raises(ValueError, match="at least 2"):
        draw_partners(1)


# -------------------------------------------------------------------------------------- substitution


def test_fixed_partners_with_a_two_cycle_match_the_in_place_loop():
    B, N, D, k = 4, 17, 5, 4
    x = torch.randn(B, N, D, generator=gen(0), dtype=torch.float64)
    idx = random_indices(B, N - 1, k, seed=1)
    partners = [1, 0, 1, 2]
    mixed, targets = substitute(x, idx, partners)
    torch.testing.assert_close(mixed, sequential_substitution(x, idx, partners), rtol=0, atol=0)
    assert chained_sources(partners) == [1, 1, 1, 1]
    # sample 1 (2-cycle with 0) gets its own tokens back, yet is labelled substituted
    assert torch.equal(mixed[1], x[1]) and targets[1].sum() == k
    # rank r of the source's list lands at rank r of the target's list
    for r in range(k):
        assert torch.equal(mixed[0, idx[0, r]], x[1, idx[1, r]])
    # a naive swap from the original batch is *not* the released behaviour
    naive, _ = substitute(x, idx, partners, chained=False)
    assert not torch.equal(naive, mixed)
    torch.testing.assert_close(naive, clean_substitution(x, idx, partners), rtol=0, atol=0)


@pytest.mark.parametrize("index_shift", [True, False])
@pytest.mark.parametrize("chained", [True, False])
def test_random_partners_match_the_loops(index_shift, chained):
    B, N, D, k = 6, 17, 3, 5
    for trial in range(25):
        x = torch.randn(B, N, D, generator=gen(trial), dtype=torch.float64, requires_grad=True)
        idx = random_indices(B, N - 1, k, seed=100 + trial)
        torch.manual_seed(trial)
        partners = draw_partners(B)
        positions = idx if index_shift else idx + 1
        loop = sequential_substitution if chained else clean_substitution
        want = loop(x, positions, partners)
        got, targets = substitute(x, idx, partners, index_shift=index_shift, chained=chained)
        torch.testing.assert_close(got, want, rtol=0, atol=0)
        w = torch.randn(B, N, D, generator=gen(999), dtype=torch.float64)
        g_got, = torch.autograd.grad((got * w).sum(), x)
        g_want, = torch.autograd.grad((want * w).sum(), x)
        torch.testing.assert_close(g_got, g_want, rtol=0, atol=1e-14)  # gradients reach targets and sources alike
        assert torch.equal(targets.sum(1), torch.full((B,), float(k), dtype=torch.float64))
        assert torch.equal(targets.nonzero()[:, 1].view(B, k).sort(1).values, idx.sort(1).values)


def test_index_shift_can_write_the_class_token_and_never_the_last_patch():
    B, N, D = 2, 10, 4
    x = torch.randn(B, N, D, generator=gen(3), dtype=torch.float64)
    idx = torch.tensor([[0, N - 2], [3, 5]])  # sample 0 selected the first and the last patch
    shifted, targets = substitute(x, idx, [1, 0])
    assert not torch.equal(shifted[0, 0], x[0, 0])  # the class token was overwritten
    assert torch.equal(shifted[:, N - 1], x[:, N - 1])  # the last patch (position N-1) never is
    assert torch.equal(shifted[0, N - 2], x[1, 5])
    assert targets.shape == (B, N + 1) and targets[:, -2:].sum() == 0  # width P + 2, two dead columns
    clean, clean_targets = substitute(x, idx, [1, 0], index_shift=False, width=N - 1)
    assert torch.equal(clean[:, 0], x[:, 0])  # the class token is never written
    assert torch.equal(clean[0, 1], x[1, 4]) and torch.equal(clean[0, N - 1], x[1, 6])
    assert clean_targets.shape == (B, N - 1) and torch.equal(clean_targets, targets[:, : N - 1])


def test_k_zero_changes_nothing_and_targets_are_all_zero():
    x = torch.randn(3, 7, 2, generator=gen(4), dtype=torch.float64)
    mixed, targets = substitute(x, torch.zeros(3, 0, dtype=torch.long), [1, 2, 0])
    assert torch.equal(mixed, x) and targets.shape == (3, 8) and targets.sum() == 0


# --------------------------------------------------------------------------------------- the model


def build(seed=0, **options):
    adapter = get_method("mixvit")
    torch.manual_seed(seed)
    opts = adapter.resolve_options(None, {"mask_topk": 0.25, **options})
    model = adapter.create(5, TINY, opts, Recipe()).double()
    with torch.no_grad():  # sharper attention than the 0.02 init (no near-ties), and a live class head
        for block in model.vit.blocks:
            block.attn.qkv.weight.mul_(6.0)
        model.vit.head.weight.normal_(0.0, 0.5, generator=gen(seed + 1))
    return model


def images(B=4, seed=0):
    return torch.randn(B, 3, 16, 16, generator=gen(seed), dtype=torch.float64)


def reference_training_forward(model: MixViT, x, labels, seed, topk=0.25):
    """PV's training forward (`Encoder`, `MaskTransformer`, `VisionTransformer.forward`) on the
    model's weights: explicit maps per block, the full-product selection, the in-place loop, labels
    by loop, BCEWithLogits and CE. Returns (ce, bce, mixed input of the mask block)."""
    vit = model.vit
    h = embed_tokens(vit, x)
    weights, contributions, pre = [], [], None
    for i, block in enumerate(vit.blocks):
        B, N, D = h.shape
        heads = block.attn.num_heads
        qkv = block.attn.qkv(block.norm1(h)).reshape(B, N, 3, heads, D // heads).permute(2, 0, 3, 1, 4)
        w, c = maps_from_qk(qkv[0], qkv[1])
        weights.append(w.detach())
        contributions.append(c.detach())
        h = block(h)
        if i == len(vit.blocks) - 2:
            pre = h.clone()
    logits = vit.head(vit.norm(h)[:, 0])
    _, idx = generate_masks(weights, contributions, topk)
    torch.manual_seed(seed)
    B = pre.shape[0]
    for j in range(B):
        k = torch.randint(0, B, (1, 1)).flatten().item()
        while k == j:
            k = torch.randint(0, B, (1, 1)).flatten().item()
        pre[j, idx[j, :], :] = pre[k, idx[k, :], :]
    mask_x = model.mask.norm(model.mask.block(pre))
    n_patches = vit.patch_embed.num_patches + 1
    mask_labels = labels.new_zeros((B, n_patches + 1)).to(pre.dtype)
    for i in range(B):
        mask_labels[i, idx[i, :]] = 1
    bce = torch.nn.BCEWithLogitsLoss()(model.mask.head(mask_x[:, 0]), mask_labels)
    ce = torch.nn.CrossEntropyLoss()(logits, labels)
    return ce, bce, pre


@pytest.mark.parametrize("attention", ["fused", "eager"])
def test_training_forward_equals_the_transcribed_original(attention):
    model = build(mask_weight=4.0)
    set_attention_mode(model, attention)
    model.train()
    x, labels = images(), torch.tensor([0, 3, 1, 4])
    seen = {}
    model.mask.block.register_forward_pre_hook(lambda mod, args: seen.setdefault("mixed", args[0].detach()))
    torch.manual_seed(11)
    out = model(x, labels)
    ce, bce, mixed = reference_training_forward(model, x, labels, seed=11)
    torch.testing.assert_close(seen["mixed"], mixed.detach(), rtol=0, atol=1e-12)
    assert not torch.equal(mixed, reference_training_forward(model, x, labels, seed=12)[2])  # partners matter
    torch.testing.assert_close(out["losses"]["ce"], ce, rtol=1e-12, atol=0)
    torch.testing.assert_close(out["losses"]["bce"], 4.0 * bce, rtol=1e-10, atol=0)
    torch.testing.assert_close(out["loss"], ce + 4.0 * bce, rtol=1e-10, atol=0)


def test_clean_variant_predicts_patches_with_a_p_wide_head():
    adapter = get_method("mixvit")
    options = adapter.resolve_options("clean")
    assert (options["index_shift"], options["chained"], options["mask_head_width"]) == (False, False, "P")
    torch.manual_seed(0)
    model = adapter.create(5, TINY, options, Recipe()).double().train()
    assert model.mask.head.out_features == TINY.num_patches
    out = model(images(), torch.tensor([0, 1, 2, 3]))
    assert out["losses"]["bce"] > 0


def test_eval_is_the_main_branch_only_and_draws_no_random_numbers():
    model = build().eval()
    x = images(seed=3)
    state = torch.get_rng_state()
    logits = model(x)["logits"]
    with_loss = model(x, torch.tensor([0, 1, 2, 3]))
    assert torch.equal(torch.get_rng_state(), state)
    assert set(with_loss["losses"]) == {"ce"}
    torch.testing.assert_close(logits, model.vit(x), rtol=0, atol=0)
    del model.mask
    torch.testing.assert_close(model(x)["logits"], logits, rtol=0, atol=0)


def test_gradient_routing():
    """§10.9: BCE reaches blocks 0..L-2, the embeddings and the mask branch, not the last block, the
    final norm or the class head; CE never reaches the mask branch; selection carries no gradient."""
    model = build().train()
    out = model(images(), torch.tensor([0, 1, 2, 3]))

    def grads(loss):
        model.zero_grad(set_to_none=True)
        loss.backward(retain_graph=True)
        return {n: p.grad for n, p in model.named_parameters()}

    bce = grads(out["losses"]["bce"])
    last = f"vit.blocks.{TINY.depth - 1}."
    for name, g in bce.items():
        reached = g is not None and g.abs().sum() > 0
        if name.startswith((last, "vit.norm.", "vit.head.")):
            assert g is None, name
        elif name.startswith(("vit.blocks.", "vit.patch_embed.", "vit.pos_embed", "vit.cls_token", "mask.")):
            assert reached, name
    ce = grads(out["losses"]["ce"])
    assert all(g is None for n, g in ce.items() if n.startswith("mask."))
    assert ce[f"{last}mlp.fc2.weight"].abs().sum() > 0


def test_selection_is_computed_without_gradient(monkeypatch):
    seen = []
    original = mixvit.patch_scores

    def spy(layers, statistics):
        seen.extend(layer.q.requires_grad or layer.k.requires_grad for layer in layers)
        scores = original(layers, statistics)
        seen.append(scores.requires_grad)
        return scores

    monkeypatch.setattr(mixvit, "patch_scores", spy)
    build().train()(images(), torch.tensor([0, 1, 2, 3]))
    assert seen and not any(seen)


def test_batch_of_one_skips_mixing_but_touches_every_parameter():
    model = build().train()
    state = torch.get_rng_state()
    out = model(images(B=1), torch.tensor([2]))
    assert torch.equal(torch.get_rng_state(), state) and out["losses"]["bce"] == 0
    out["loss"].backward()
    assert all(p.grad is not None for p in model.parameters())  # DDP needs a gradient for each


def test_mask_block_is_fresh_and_shaped_like_a_backbone_block():
    adapter = get_method("mixvit")
    torch.manual_seed(0)
    model = adapter.build(5, TINY, adapter.resolve_options(None), Recipe())
    block, last = model.mask.block, model.vit.blocks[-1]
    assert [n for n, _ in block.named_parameters()] == [n for n, _ in last.named_parameters()]
    for name in ("attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight"):
        a, b = block.get_parameter(name), last.get_parameter(name)
        assert not torch.equal(a, b), name
        bound = 1 / math.sqrt(a.shape[-1] if a.ndim == 2 else TINY.embed_dim)  # PyTorch's default Linear init
        assert a.abs().max() <= bound and a.abs().max() > 0.8 * bound, name
    assert block.mlp.fc1.bias.abs().max() < 1e-4 and block.mlp.fc2.bias.abs().max() < 1e-4
    bound = math.sqrt(6.0 / sum(block.mlp.fc1.weight.shape))  # xavier-uniform
    assert block.mlp.fc1.weight.abs().max() <= bound and block.mlp.fc1.weight.abs().max() > 0.9 * bound
    assert torch.equal(model.mask.norm.weight, torch.ones_like(model.mask.norm.weight))


# ------------------------------------------------------------------------------------------ adapter


def test_options_per_dataset_variant_and_command_line():
    adapter = get_method("mixvit")
    spec = MatrixSpec([(adapter, None), (adapter, "clean")], ["cotton", "cub", "soyglobal", "soyageing_r1", "demo"],
                      [0], "tiny")
    options = {(c.variant, c.dataset): c.options for c in build_cells(spec)}
    assert options[None, "cotton"]["mask_weight"] == 4.0 and options[None, "cub"]["mask_weight"] == 0.1
    assert options[None, "soyglobal"]["mask_topk"] == 0.1 and options[None, "soyageing_r1"]["mask_weight"] == 1.0
    assert options[None, "demo"] == adapter.resolve_options(None)
    assert options["clean", "cotton"]["mask_weight"] == 4.0 and options["clean", "cotton"]["index_shift"] is False
    spec.option_overrides = {"mask_weight": 2.0}
    assert {c.options["mask_weight"] for c in build_cells(spec)} == {2.0}


@pytest.mark.parametrize("overrides, message", [
    ({"mask_head_width": "P+1"}, "mask_head_width must be one of P\\+2, P"),
    ({"mask_topk": 1.5}, "mask_topk must be in \\[0, 1\\]"),
    ({"mask_weight": -1}, "mask_weight must be >= 0"),
    ({"chained": "yes"}, "must be true/false"),
])
def test_bad_options_are_usage_errors(overrides, message):
    with pytest.raises(UsageError, match=message):
        get_method("mixvit").resolve_options(None, overrides)


def test_backbone_checks():
    adapter = get_method("mixvit")
    with pytest.raises(UsageError, match="depth >= 2"):
        adapter.check_backbone(BackboneConfig(img_size=16, patch_size=4, embed_dim=8, depth=1, num_heads=1))
    with pytest.raises(UsageError, match="extra prefix tokens"):
        adapter.check_backbone(BackboneConfig(img_size=16, patch_size=4, embed_dim=8, depth=2, num_heads=1,
                                              extra_tokens=1))


def test_eager_variant_gives_the_same_selection():
    fused, eager = build(), build(attention="eager")
    assert eager.vit.blocks[0].attn.fused_attn is False and fused.vit.blocks[0].attn.fused_attn is True
    labels = torch.tensor([0, 1, 2, 3])
    torch.manual_seed(7)
    a = fused.train()(images(), labels)
    torch.manual_seed(7)
    b = eager.train()(images(), labels)
    torch.testing.assert_close(a["loss"], b["loss"], rtol=1e-10, atol=0)
    assert F.mse_loss(a["logits"], b["logits"]) < 1e-20


UFG = dict(img_size=448, resize_size=600, batch_size=16, lr=5e-3, weight_decay=1e-4, warmup_steps=500,
           schedule="linear", color_jitter=0.0)


@pytest.mark.parametrize("dataset, expected", [
    ("cotton", {**UFG, "steps": 2400, "eval_every": 16}),  # --eval_every given twice: the last (16) wins
    ("soyloc", {**UFG, "weight_decay": 5e-5, "steps": 9500, "eval_every": 38}),
    ("soygene", {**UFG, "steps": 120000, "eval_every": 300}),
    ("soyageing_r1", {**UFG, "steps": 15500, "eval_every": 155}),
    ("soyageing_r3", {**UFG, "steps": 15500, "eval_every": 310}),
    ("soyageing_r4", {**UFG, "steps": 15500, "eval_every": 310}),
    ("soyageing_r5", {**UFG, "steps": 15500, "eval_every": 155}),  # batch 16, not the missing flag's 512
    ("soyageing_r6", {**UFG, "steps": 15500, "eval_every": 310}),
    ("cub", dict(img_size=448, resize_size=600, batch_size=16, lr=0.02, weight_decay=5e-5, warmup_steps=500,
                 schedule="cosine", steps=10000, eval_every=200, color_jitter=0.4)),
    ("soyglobal", dict(img_size=448, resize_size=600, batch_size=16, lr=0.02, weight_decay=5e-5, warmup_steps=500,
                       schedule="linear", steps=72600, eval_every=726, color_jitter=0.0)),
])
def test_card_recipes_are_the_scripts(dataset, expected):
    """Write-up §5.2, for both adapters (family `mixvit`), at the paper's scale (preset base)."""
    for name in ("mixvit", "mixvit_parts"):
        cell, = build_cells(MatrixSpec([(get_method(name), None)], [dataset], [0], "base"))
        assert {k: getattr(cell.recipe, k) for k in expected} == expected, name
        assert cell.recipe.optimizer == "sgd" and cell.recipe.clip_grad == 1.0 and cell.recipe.lr_step_offset == 0


@needs_cuda
@pytest.mark.parametrize("name", ["mixvit", "mixvit_parts"])
def test_training_forward_does_not_sync_host_and_device(name):
    adapter = get_method(name)
    cfg = adapter.configure_backbone(BackboneConfig(img_size=40, patch_size=8, embed_dim=16, depth=3, num_heads=2),
                                     adapter.resolve_options(None))
    model = adapter.create(5, cfg, adapter.resolve_options(None), Recipe()).cuda().train()
    x, y = torch.randn(4, 3, 40, 40, device="cuda"), torch.tensor([0, 1, 2, 3], device="cuda")
    assert_second_step_does_not_sync(lambda: model(x, y))
