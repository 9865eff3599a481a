"""FFVT: MAWS against full-matrix computations, fusion provenance, and the whole model against a
plain transcription of the released code (float64, explicit maps, per-sample loops, same weights)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from bench.recipe import Recipe
from methods import get_method
from methods.attention import LayerQK, reference
from methods.backbone import BackboneConfig
from methods.ffvt import FFVTModel, maws_scores, maws_select, mutual_attention
from jeonsworld import ReferenceViT

pytestmark = pytest.mark.usefixtures("single_thread")

# write-up §8: img 32, patch 8 (17 tokens), width 32, 4 heads, depth 4 (3 MAWS layers), k 3, 5 classes
TINY = BackboneConfig(img_size=32, patch_size=8, embed_dim=32, depth=4, num_heads=4, drop_rate=0.0)
K = 3


def randn(*shape, seed=0, scale=1.0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale


def full_matrix_maws(q, k):
    """§1.3 from the full maps: S, row softmax P, column softmax C; m = mean_h P[0, :] * mean_h C[:, 0]."""
    S = q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5
    P = torch.exp(S) / torch.exp(S).sum(-1, keepdim=True)
    C = torch.exp(S) / torch.exp(S).sum(-2, keepdim=True)
    return P[:, :, 0, :].mean(1) * C[:, :, :, 0].mean(1)


def test_maws_scores_and_picks_equal_the_full_matrix_computation():
    for seed in range(5):
        q, k = randn(3, 4, 17, 8, seed=seed, scale=2), randn(3, 4, 17, 8, seed=100 + seed, scale=2)
        want = full_matrix_maws(q, k)
        assert (maws_scores(q, k) - want).abs().max() <= 1e-15
        order = torch.argsort(want, dim=1, descending=True)
        assert torch.equal(maws_select(q, k, 5), order[:, :5])
        layer = LayerQK(q=q, k=k, scale=8**-0.5)
        assert (mutual_attention(layer, reference) - want).abs().max() <= 1e-15
    # the product of head means, not the mean of per-head products
    S = q @ k.transpose(-2, -1) / 8**0.5
    per_head = (S.softmax(-1)[:, :, 0, :] * S.softmax(-2)[:, :, :, 0]).mean(1)
    assert not torch.allclose(maws_scores(q, k), per_head, atol=1e-6)


def test_maws_picks_the_class_token_when_it_wins():
    q, k = randn(2, 4, 17, 8, seed=1), randn(2, 4, 17, 8, seed=2)
    u = randn(2, 4, 8, seed=3)
    q[:, :, 0], k[:, :, 0] = 3 * u, 3 * u  # S[0, 0] dominates both CLS row 0 and CLS column 0
    want = full_matrix_maws(q, k)
    assert torch.equal(want.argmax(1), torch.zeros(2, dtype=torch.long))
    picks = maws_select(q, k, 4)
    assert torch.equal(picks[:, 0], torch.zeros(2, dtype=torch.long))
    assert torch.equal(picks, torch.argsort(want, dim=1, descending=True)[:, :4])


def test_maws_runs_without_grad_in_float32_under_low_precision():
    q = randn(2, 4, 17, 8).bfloat16().requires_grad_()
    scores = maws_scores(q, randn(2, 4, 17, 8, seed=1).bfloat16())
    assert scores.dtype == torch.float32 and not scores.requires_grad
    with pytest.raises(ValueError, match="between 1 and the 17 tokens"):
        maws_select(q, q, 18)


def build(mode: str = "fused", seed: int = 0, **options) -> FFVTModel:
    adapter = get_method("ffvt")
    opts = adapter.resolve_options(None, {"attention": mode, "num_tokens": K, **options})
    torch.manual_seed(seed)
    model = adapter.create(5, adapter.configure_backbone(TINY, opts), opts, Recipe()).double()
    assert torch.count_nonzero(model.vit.head.weight) == 0  # zero-initialised, as the released code
    with torch.no_grad():  # non-zero logits, so that the checks below can fail
        model.vit.head.weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
    return model


def images(batch: int = 4, seed: int = 7):
    return randn(batch, 3, 32, 32, seed=seed)


def test_fused_sequence_length_and_provenance():
    model = build().eval()
    x = images()
    with torch.no_grad():
        fusion = model.fuse(x)
        # the blocks by hand: inputs and outputs of blocks 0..2, and their q/k
        h = model.vit._pos_embed(model.vit.patch_embed(x))
        inputs, outputs, scores = [], [], []
        for block in model.vit.blocks[:-1]:
            qkv = block.attn.qkv(block.norm1(h)).reshape(4, 17, 3, 4, 8).permute(2, 0, 3, 1, 4)
            scores.append(full_matrix_maws(qkv[0], qkv[1]))
            inputs.append(h)
            h = block(h)
            outputs.append(h)
    assert fusion.tokens.shape == (4, 1 + (TINY.depth - 1) * K, 32)
    assert torch.equal(fusion.tokens[:, 0], outputs[-1][:, 0])
    for layer, (picks, out, inp, score) in enumerate(zip(fusion.picks, outputs, inputs, scores)):
        assert torch.equal(picks, torch.argsort(score, dim=1, descending=True)[:, :K])
        assert torch.equal(fusion.outputs[layer], out)
        block = fusion.tokens[:, 1 + layer * K: 1 + (layer + 1) * K]
        for b in range(4):
            assert torch.equal(block[b], out[b, picks[b]])  # the block's output ...
            assert not torch.allclose(block[b], inp[b, picks[b]])  # ... not its input


def test_logits_are_invariant_to_the_order_of_the_selected_tokens():
    model = build().eval()
    with torch.no_grad():
        tokens = model.fuse(images()).tokens
        logits = model.classify(tokens)
        perm = torch.randperm(tokens.shape[1] - 1, generator=torch.Generator().manual_seed(0)) + 1
        shuffled = model.classify(torch.cat([tokens[:, :1], tokens[:, perm]], dim=1))
        assert (shuffled - logits).abs().max() <= 1e-10
        # guard: what token 0 is does matter
        assert not torch.allclose(model.classify(tokens.flip(1)), logits, atol=1e-6)


class CountCalls(TorchFunctionMode):
    """Counts SDPA, argsort and topk calls: eager runs the originals' ops, fused the fast ones."""

    WATCH = {F.scaled_dot_product_attention: "sdpa", torch.argsort: "argsort", torch.Tensor.topk: "topk"}

    def __init__(self):
        super().__init__()
        self.calls = dict.fromkeys(self.WATCH.values(), 0)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self.WATCH:
            self.calls[self.WATCH[func]] += 1
        return func(*args, **(kwargs or {}))


def reference_ffvt(ref: ReferenceViT, x: torch.Tensor, k: int) -> torch.Tensor:
    """F:models/modeling.py:259-321, 350-355 with explicit maps and the per-sample loop."""
    hidden = ref.embed(x)
    tokens = [[] for _ in range(x.shape[0])]
    for block in ref.blocks[:-1]:
        hidden, weights, contribution = block(hidden)
        score = weights[:, :, 0, :].mean(1) * contribution.mean(1)
        order = torch.argsort(score, dim=1, descending=True)
        for i in range(x.shape[0]):
            tokens[i].extend(hidden[i, order[i, :k]])
    selected = torch.stack([torch.stack(t) for t in tokens])
    fused = torch.cat([hidden[:, :1], selected], dim=1)
    encoded = ref.norm(ref.blocks[-1](fused)[0])
    return ref.head(encoded[:, 0])


@pytest.mark.parametrize("mode", ["fused", "eager"])
def test_logits_and_every_gradient_equal_the_released_code(mode):
    model = build(mode).train()
    ref = ReferenceViT.from_timm(model.vit).train()
    x, y = images(), torch.tensor([0, 3, 3, 1])

    with CountCalls() as counter:
        out = model(x, y)
    out["loss"].backward()
    n = TINY.depth
    expected = {"sdpa": n, "argsort": 0, "topk": n - 1} if mode == "fused" else {"sdpa": 0, "argsort": n - 1, "topk": 0}
    assert counter.calls == expected

    logits = reference_ffvt(ref, x, K)
    F.cross_entropy(logits, y).backward()
    assert (out["logits"] - logits).abs().max() <= 1e-10
    assert (out["loss"] - F.cross_entropy(logits, y)).abs() <= 1e-12
    ref.assert_same_grads(model.vit)


def test_eager_and_fused_pick_the_same_tokens():
    fused, eager = build("fused").eval(), build("eager").eval()
    x = images(6, seed=3)
    with torch.no_grad():
        a, b = fused.fuse(x), eager.fuse(x)
    assert all(torch.equal(p, q) for p, q in zip(a.picks, b.picks))
    assert (a.tokens - b.tokens).abs().max() <= 1e-12

