"""Attention toolkit: q/k capture under fused attention, fast statistics vs full-map references."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from methods.attention import AttentionCapture, LayerQK, fast, reference, set_attention_mode
from methods.backbone import BackboneConfig, build_vit, embed_tokens

pytestmark = pytest.mark.usefixtures("single_thread")

STATISTICS = ["cls_row_softmax", "cls_column_softmax", "rollout_row", "rollout_column",
              "residual_rollout_column_mean"]


def random_layers(n_tokens: int, depth: int = 4, batch: int = 2, heads: int = 3, width: int = 5, seed: int = 0,
                  temperature: float = 2.0) -> list[LayerQK]:
    g = torch.Generator().manual_seed(seed)

    def qk():
        return torch.randn(batch, heads, n_tokens, width, generator=g, dtype=torch.float64) * temperature

    return [LayerQK(q=qk(), k=qk(), scale=width**-0.5) for _ in range(depth)]


def call(module, name: str, layers: list[LayerQK], token: int, chunk: int | None):
    fn = getattr(module, name)
    if name.startswith("cls_"):
        return fn(layers[1], token)
    if name == "residual_rollout_column_mean":
        return fn(layers, chunk=chunk)
    return fn(layers, token, chunk=chunk)


@pytest.mark.parametrize("n_tokens", [17, 23])
@pytest.mark.parametrize("chunk", [None, 5, 7])
@pytest.mark.parametrize("name", STATISTICS)
def test_fast_statistics_equal_full_matrix_references(name, chunk, n_tokens):
    layers = random_layers(n_tokens)
    for token in (0, n_tokens - 1):
        got, want = call(fast, name, layers, token, chunk), call(reference, name, layers, token, chunk)
        assert got.shape == want.shape and got.dtype == torch.float64
        assert (got - want).abs().max().item() <= 1e-10, (name, token)


def softmax_np(s, dim):
    e = torch.exp(s - s.amax(dim=dim, keepdim=True))
    return e / e.sum(dim=dim, keepdim=True)


def test_references_are_the_originals_products():
    """The reference path against independent transcriptions (and the orders it must not use)."""
    layers = random_layers(9, depth=3, batch=1, heads=2)
    S = [torch.einsum("bhid,bhjd->bhij", l.q, l.k) * l.scale for l in layers]
    A = [softmax_np(s, -1) for s in S]
    C = [softmax_np(s, -2) for s in S]
    # FFVT: contribution[i] = exp(S[i, 0]) / sum_j exp(S[j, 0]); weights = P[0, :]
    col = torch.exp(S[1][..., 0]) / torch.exp(S[1][..., 0]).sum(-1, keepdim=True)
    assert torch.allclose(reference.cls_column_softmax(layers[1]), col, atol=1e-14, rtol=0)
    assert torch.allclose(reference.cls_row_softmax(layers[1], 3), A[1][:, :, 3], atol=1e-14, rtol=0)
    # TransFG / Mix-ViT: later layers multiply on the left
    row = torch.linalg.multi_dot([A[2][0, 1], A[1][0, 1], A[0][0, 1]])[0]
    assert torch.allclose(reference.rollout_row(layers)[0, 1], row, atol=1e-14, rtol=0)
    assert not torch.allclose(reference.rollout_row(layers)[0, 1],
                              torch.linalg.multi_dot([A[0][0, 1], A[1][0, 1], A[2][0, 1]])[0], atol=1e-6)
    column = torch.linalg.multi_dot([C[2][0, 0], C[1][0, 0], C[0][0, 0]])[:, 4]
    assert torch.allclose(reference.rollout_column(layers, 4)[0, 0], column, atol=1e-14, rtol=0)
    # RAMS-Trans: head mean first, then 0.5·(A + I), product, mean over all rows
    hat = [0.5 * (a.mean(1)[0] + torch.eye(9, dtype=torch.float64)) for a in A]
    mean_rows = torch.linalg.multi_dot(hat[::-1]).mean(0)
    assert torch.allclose(reference.residual_rollout_column_mean(layers)[0], mean_rows, atol=1e-14, rtol=0)
    per_head_first = torch.stack([torch.linalg.multi_dot([0.5 * (a[0, h] + torch.eye(9, dtype=torch.float64))
                                                          for a in A[::-1]]).mean(0) for h in range(2)]).mean(0)
    assert not torch.allclose(mean_rows, per_head_first, atol=1e-6)


def test_statistics_run_in_float32_or_wider_without_grad():
    layers = [LayerQK(q=l.q.bfloat16().requires_grad_(), k=l.k.bfloat16(), scale=l.scale) for l in random_layers(11)]
    for name in STATISTICS:
        out = call(fast, name, layers, 0, 4)
        assert out.dtype == torch.float32 and not out.requires_grad


@pytest.mark.parametrize("module", [fast, reference])
def test_statistics_stay_float32_under_autocast(module):
    """A bf16 autocast region around the statistics changes nothing: their matmuls run in float32."""
    layers = [LayerQK(q=l.q.float(), k=l.k.float(), scale=l.scale) for l in random_layers(11)]
    for name in STATISTICS:
        plain = call(module, name, layers, 0, 4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            inside = call(module, name, layers, 0, 4)
        assert inside.dtype == torch.float32 and torch.equal(inside, plain), name


def test_statistics_compile_in_one_graph_and_stay_float32_under_autocast():
    layers = [LayerQK(q=l.q.float(), k=l.k.float(), scale=l.scale) for l in random_layers(11)]
    compiled = torch.compile(lambda: fast.rollout_row(layers), backend="eager", fullgraph=True)  # no graph break
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = compiled()
    assert out.dtype == torch.float32 and torch.equal(out, fast.rollout_row(layers))


def test_default_slice_budget_is_per_device_and_overridable(monkeypatch):
    layer = random_layers(40, batch=2, heads=4)[0]  # B·H·N = 320 elements per query row
    monkeypatch.delenv(fast.CHUNK_ELEMENTS_ENV, raising=False)
    assert fast.chunk_size(layer, None) == min(40, fast.DEFAULT_CHUNK_ELEMENTS["cpu"] // 320)
    monkeypatch.setenv(fast.CHUNK_ELEMENTS_ENV, "960")
    assert fast.chunk_size(layer, None) == 3 and fast.chunk_size(layer, 7) == 7
    got = fast.rollout_row(random_layers(40), chunk=None)
    monkeypatch.delenv(fast.CHUNK_ELEMENTS_ENV)
    assert (got - reference.rollout_row(random_layers(40))).abs().max().item() <= 1e-10
    monkeypatch.setenv(fast.CHUNK_ELEMENTS_ENV, "lots")
    with pytest.raises(ValueError, match=fast.CHUNK_ELEMENTS_ENV):
        fast.chunk_size(layer, None)


def tiny_vit(depth: int = 3, img_size: int = 24, patch: int = 4, dim: int = 16, heads: int = 4, **kw):
    cfg = BackboneConfig(img_size=img_size, patch_size=patch, embed_dim=dim, depth=depth, num_heads=heads,
                         drop_rate=0.0, **kw)
    torch.manual_seed(0)
    return build_vit(cfg, num_classes=3).double().eval()


class CountSDPA(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is F.scaled_dot_product_attention:
            self.calls += 1
        return func(*args, **(kwargs or {}))


def test_capture_keeps_fused_attention_and_records_what_the_blocks_used():
    vit = tiny_vit()
    images = torch.randn(2, 3, 24, 24, dtype=torch.float64)
    x = embed_tokens(vit, images)
    with CountSDPA() as counter, AttentionCapture(vit.blocks, outputs=True) as cap:
        out = vit.blocks(x)
    assert counter.calls == 3 and cap.mode == "fused" and cap.statistics is fast
    h = x
    for block, layer, output in zip(vit.blocks, cap.layers, cap.outputs):
        qkv = block.attn.qkv(block.norm1(h)).reshape(2, 37, 3, 4, 4).permute(2, 0, 3, 1, 4)
        assert torch.equal(layer.q, qkv[0]) and torch.equal(layer.k, qkv[1]) and layer.probs is None
        h = block(h)
        assert torch.equal(output, h)
    assert torch.equal(cap.outputs[-1], out)


def test_eager_mode_materialises_maps_and_gives_the_same_statistics():
    vit = tiny_vit()
    images = torch.randn(2, 3, 24, 24, dtype=torch.float64)
    with AttentionCapture(vit.blocks) as fused:
        logits_fused = vit(images)
    assert set_attention_mode(vit, "eager") == 3
    with CountSDPA() as counter, AttentionCapture(vit.blocks) as eager:
        logits_eager = vit(images)
    assert counter.calls == 0 and eager.mode == "eager" and eager.statistics is reference
    assert (logits_fused - logits_eager).abs().max() <= 1e-12
    for layer in eager.layers:  # the block's own map, before (zero) dropout
        assert torch.allclose(layer.probs, (layer.q @ layer.k.transpose(-2, -1) * layer.scale).softmax(-1),
                              atol=1e-14, rtol=0)
    for name in STATISTICS:
        got = call(fused.statistics, name, fused.layers, 0, 5)
        want = call(eager.statistics, name, eager.layers, 0, None)
        assert (got - want).abs().max() <= 1e-10, name


def test_capture_refuses_what_it_cannot_record():
    vit = tiny_vit()
    x = embed_tokens(vit, torch.randn(1, 3, 24, 24, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="ran twice"), AttentionCapture(vit.blocks[:1]):
        vit.blocks[0](vit.blocks[0](x))
    with AttentionCapture(vit.blocks) as cap:
        vit.blocks[0](x)
    with pytest.raises(RuntimeError, match=r"block\(s\) \[1, 2\]"):
        cap.layers
    with pytest.raises(RuntimeError, match="outputs=True"):
        cap.outputs
    vit.blocks[0].attn.fused_attn = False
    with pytest.raises(ValueError, match="mix attention modes"):
        AttentionCapture(vit.blocks)
    with torch.no_grad():  # hooks are gone after the context: nothing is recorded any more
        vit.blocks[1](x)
    assert cap._qkv[1] is None


# --- memory: statistics must not bring back the L·N² attention-map bill -------------------------

def peak_bytes(fn) -> int:
    """Peak bytes of tensors alive while `fn` runs, tracked per allocation by torch's MemTracker
    (a dispatch mode: exact and independent of other processes on the machine)."""
    mem_tracker = pytest.importorskip("torch.distributed._tools.mem_tracker",
                                      reason="this torch build has no torch.distributed memory tracker")
    tracker = mem_tracker.MemTracker()
    with tracker:
        fn()
    return tracker.get_tracker_snapshot("peak")[torch.device("cpu")]["Total"]


def forward_with_statistics(depth: int, mode: str, chunk: int | None) -> int:
    """Train-mode forward of a narrow ViT at N = 577 tokens plus every statistic; peak bytes."""
    vit = tiny_vit(depth=depth, img_size=96, patch=4, dim=8, heads=4).float().train()
    set_attention_mode(vit, mode)
    images = torch.randn(1, 3, 96, 96)

    def run():
        with AttentionCapture(vit.blocks) as cap:
            out = vit(images)
        layers, stats = cap.layers, cap.statistics
        stats.cls_row_softmax(layers[0]), stats.cls_column_softmax(layers[0])
        stats.rollout_row(layers, chunk=chunk), stats.rollout_column(layers, chunk=chunk)
        stats.residual_rollout_column_mean(layers, chunk=chunk)
        return out

    return peak_bytes(run)


def test_peak_memory_of_a_forward_with_statistics_does_not_grow_with_depth_times_n_squared():
    one_map = 1 * 4 * 577 * 577 * 4  # B·H·N² float32 bytes: 5.3 MB
    fused = {depth: forward_with_statistics(depth, "fused", chunk=144) for depth in (1, 3)}
    eager = {depth: forward_with_statistics(depth, "eager", chunk=None) for depth in (1, 3)}
    # two more layers: eager keeps at least one map per layer alive (the originals' cost) ...
    assert eager[3] - eager[1] >= 2 * one_map
    # ... the fast path only O(N·D) activations and q/k, and transient [B, H, chunk, N] slices
    assert fused[3] - fused[1] < 0.5 * one_map
    assert fused[3] < 1.5 * one_map
