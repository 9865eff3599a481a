"""So-ViT head: cross-covariance, fast svPN against slow float64 references, the head module, the adapter.

References (float64, obviously correct): explicit loops for the cross-covariance, a line-by-line
transcription of the original svPN (write-up §2.2), SVD forms of what the fast svPN converges to.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.errors import UsageError
from bench.recipe import Recipe
from methods import get_method
from methods.backbone import BackboneConfig
from methods.sovit import (
    FirstOrderHead,
    SecondOrderHead,
    SVDPowerNorm,
    SVPowerNorm,
    auto_head_dims,
    cross_covariance,
    sv_power_norm,
    sv_power_norm_exact,
)

TINY = BackboneConfig(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, drop_rate=0.0)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=gen(seed), dtype=dtype)


def cross_covariance_loop(P, Q):
    """Σ_n (P[n,i] - mean_i)(Q[n,j] - mean_j) / N, one entry at a time."""
    B, N, d1 = P.shape
    d2 = Q.shape[2]
    out = torch.zeros(B, d1, d2, dtype=torch.float64)
    for b in range(B):
        for i in range(d1):
            mp = sum(P[b, n, i].item() for n in range(N)) / N
            for j in range(d2):
                mq = sum(Q[b, n, j].item() for n in range(N)) / N
                out[b, i, j] = sum((P[b, n, i].item() - mp) * (Q[b, n, j].item() - mq) for n in range(N)) / N
    return out


def original_svpn(X, weight, alpha=0.5, iterNum=1, svNum=1):
    """Transcription of SV:src/normalization/svPN.py:53-87 (buffers in X's dtype, not float32).

    The original receives X (B, d1, d2), works on A = Xᵀ with its start vector on the d1 side, and
    transposes the result back.
    """
    x = X.transpose(1, 2)
    batchsize, N, d = x.size()
    if svNum is None:
        top, norm_remain = min(N, d), False
    else:
        top, norm_remain = svNum, True
    U = torch.zeros(batchsize, N, top, dtype=x.dtype)
    S = torch.zeros(batchsize, top, top, dtype=x.dtype)
    V = torch.zeros(batchsize, d, top, dtype=x.dtype)
    for i in range(top):
        _v = weight.view(1, d, 1).expand(batchsize, d, 1)
        for _ in range(iterNum):
            _u = F.normalize(x.bmm(_v), dim=1)
            _v = F.normalize(x.transpose(1, 2).bmm(_u), dim=1)
        s = _u.transpose(1, 2).bmm(x).bmm(_v)
        U[:, :, i], S[:, i, i], V[:, :, i] = _u.squeeze(-1), s.view(-1), _v.squeeze(-1)
        x = x - _u.bmm(s).bmm(_v.transpose(1, 2))
    y = U.bmm(S.pow(alpha)).bmm(V.transpose(1, 2))
    if norm_remain:
        y = y + x.div(s.pow(1 - alpha) + 1e-5)
    return y.transpose(1, 2)


def with_spectrum(spectrum, d1, d2, batch=2, seed=0):
    """X = U diag(s) Vᵀ with random orthonormal U, V; returns X, U, V."""
    r = len(spectrum)
    U = torch.linalg.qr(randn(batch, d1, r, seed=seed))[0]
    V = torch.linalg.qr(randn(batch, d2, r, seed=seed + 1))[0]
    s = torch.tensor(spectrum, dtype=torch.float64)
    return (U * s) @ V.transpose(1, 2), U, V


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


# ------------------------------------------------------------------------------- cross-covariance


def test_cross_covariance_equals_explicit_loop():
    P, Q = randn(2, 7, 4, seed=1), randn(2, 7, 3, seed=2)
    torch.testing.assert_close(cross_covariance(P, Q), cross_covariance_loop(P, Q), rtol=1e-12, atol=1e-12)


def test_cross_covariance_ignores_channel_offsets_and_token_order():
    P, Q = randn(2, 9, 4, seed=3), randn(2, 9, 5, seed=4)
    X = cross_covariance(P, Q)
    torch.testing.assert_close(cross_covariance(P + randn(1, 1, 4, seed=5), Q - 3.0), X)
    perm = torch.randperm(9, generator=gen(6))
    torch.testing.assert_close(cross_covariance(P[:, perm], Q[:, perm]), X)


# ------------------------------------------------------------------------------------ fast svPN


@pytest.mark.parametrize("iters,sv_num", [(1, 1), (3, 1), (2, 2), (4, None)])
def test_fast_svpn_equals_transcription_of_the_original(iters, sv_num):
    X, w = randn(3, 6, 5, seed=7), randn(6, seed=8)
    expected = original_svpn(X, w, iterNum=iters, svNum=sv_num)
    torch.testing.assert_close(sv_power_norm(X, 0.5, iters, sv_num, w), expected, rtol=1e-10, atol=1e-12)


def test_default_svpn_is_x_over_sqrt_of_the_one_step_estimate():
    """k = 1, T = 1: Y = X / (sqrt(s) + eps) plus an O(eps) rank-1 correction, s = ||X r||."""
    X, w = randn(2, 8, 4, seed=9), randn(8, seed=10)
    r = F.normalize(torch.einsum("bij,i->bj", X, w), dim=1)
    Xr = torch.einsum("bij,bj->bi", X, r)
    s, left = Xr.norm(dim=1)[:, None, None], F.normalize(Xr, dim=1)
    root, eps = s.sqrt(), 1e-5
    expected = X / (root + eps) + eps * root / (root + eps) * left[:, :, None] * r[:, None, :]
    torch.testing.assert_close(sv_power_norm(X, start=w), expected, rtol=1e-10, atol=1e-12)
    assert rel(sv_power_norm(X, start=w), X / root) < 1e-4


def test_top1_svpn_converges_to_its_svd_form():
    """k = 1: s1 -> s1^alpha, every other s_j -> s_j / (s1^(1-alpha) + eps)."""
    spectrum = [4.0, 2.0, 1.0, 0.5]
    X, U, V = with_spectrum(spectrum, 7, 5, seed=11)
    for alpha in (0.5, 0.3):
        s = torch.tensor(spectrum, dtype=torch.float64)
        mapped = torch.cat([s[:1] ** alpha, s[1:] / (s[0] ** (1 - alpha) + 1e-5)])
        expected = (U * mapped) @ V.transpose(1, 2)
        got = sv_power_norm(X, alpha, iters=100, sv_num=1, start=randn(7, seed=12))
        assert rel(got, expected) < 1e-10


def test_full_deflation_converges_to_the_exact_svpn():
    spectrum = [8.0, 4.0, 2.0, 1.0]
    X, U, V = with_spectrum(spectrum, 6, 4, seed=13)
    exact = sv_power_norm_exact(X, 0.5)
    s = torch.tensor(spectrum, dtype=torch.float64)
    torch.testing.assert_close(exact, (U * s.sqrt()) @ V.transpose(1, 2))  # the reference itself
    got = sv_power_norm(X, 0.5, iters=200, sv_num=None, start=randn(6, seed=14))
    assert rel(got, exact) < 1e-8
    assert rel(sv_power_norm(X, 0.5, iters=200, sv_num=1), exact) > 0.05  # k = 1 is a different operator


def test_exact_svpn_invariants():
    X = randn(2, 6, 4, seed=15)
    f = sv_power_norm_exact
    Pm, Qm = torch.linalg.qr(randn(6, 6, seed=16))[0], torch.linalg.qr(randn(4, 4, seed=17))[0]
    torch.testing.assert_close(f(Pm @ X @ Qm.T), Pm @ f(X) @ Qm.T)
    torch.testing.assert_close(f(X.transpose(1, 2)), f(X).transpose(1, 2))
    torch.testing.assert_close(f(4.0 * X), 2.0 * f(X))
    torch.testing.assert_close(f(X, 1.0), X)


def test_fast_svpn_limits():
    """alpha = 0, k = 1 gives X / s1; alpha = 1 gives X; 1/2-homogeneous -- each up to eps = 1e-5."""
    X, _, _ = with_spectrum([3.0, 1.0, 0.5], 5, 4, seed=18)
    s1 = torch.linalg.svdvals(X)[:, 0]
    assert rel(sv_power_norm(X, alpha=0.0, iters=100), X / s1[:, None, None]) < 2e-5
    assert rel(sv_power_norm(X, alpha=1.0, iters=3), X) < 2e-5
    assert rel(sv_power_norm(9.0 * X, iters=100), 3.0 * sv_power_norm(X, iters=100)) < 2e-5


def test_fast_svpn_keeps_dtype_and_the_start_vector_broadcasts():
    X = randn(2, 5, 3, seed=19)
    assert sv_power_norm(X).dtype == torch.float64
    assert sv_power_norm(X.float(), start=randn(5, seed=20)).dtype == torch.float32  # float64 start cast down
    per_sample = randn(2, 5, seed=21)
    expected = torch.stack([sv_power_norm(X[i:i + 1], start=per_sample[i])[0] for i in range(2)])
    torch.testing.assert_close(sv_power_norm(X, start=per_sample), expected)


@pytest.mark.parametrize("iters,sv_num", [(1, 1), (2, 2), (3, None)])
def test_fast_svpn_gradcheck(iters, sv_num):
    X = randn(2, 6, 5, seed=22).requires_grad_()
    w = randn(6, seed=23).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, s: sv_power_norm(x, 0.5, iters, sv_num, s), (X, w))


@pytest.mark.parametrize("sv_num", [1, None])
def test_degenerate_inputs_give_finite_outputs_and_gradients(sv_num):
    w = randn(5, seed=24)
    rank1 = randn(2, 5, 1, seed=25) @ randn(2, 1, 4, seed=26)
    for X in (torch.zeros(2, 5, 4, dtype=torch.float64), rank1):
        X = X.clone().requires_grad_()
        start = w.clone().requires_grad_()
        y = sv_power_norm(X, iters=2, sv_num=sv_num, start=start)
        y.sum().backward()
        assert torch.isfinite(y).all() and torch.isfinite(X.grad).all() and torch.isfinite(start.grad).all()


def test_without_the_guard_zero_input_has_the_originals_nan_gradient():
    for fn in (lambda x: sv_power_norm(x, guard=0.0), lambda x: original_svpn(x, torch.ones(5, dtype=x.dtype))):
        X = torch.zeros(2, 5, 4, dtype=torch.float64, requires_grad=True)
        y = fn(X)
        assert torch.isfinite(y).all()
        y.sum().backward()
        assert torch.isnan(X.grad).any()


# ------------------------------------------------------------------------------------- the head


def make_head(dropout=0.0, sv_method="power"):
    torch.manual_seed(0)
    norm = SVPowerNorm(12, 0.5, 1, 1, "learn", 1e-6) if sv_method == "power" else SVDPowerNorm(0.5)
    return SecondOrderHead(16, 12, 6, 5, norm, dropout)


def head_reference(head, tokens):
    """The head in float64, one sample at a time, BN from the running statistics (eval mode)."""
    out = []
    for t in tokens.double():
        branches = []
        for proj in (head.proj_p, head.proj_q):
            bn = proj.bn
            y = t @ proj.fc.weight.double().T
            y = (y - bn.running_mean.double()) / (bn.running_var.double() + bn.eps).sqrt()
            branches.append(torch.relu(y * bn.weight.double() + bn.bias.double()))
        P, Q = branches
        X = (P - P.mean(0)).T @ (Q - Q.mean(0)) / len(t)
        Y = original_svpn(X[None], head.norm.start.double())[0]
        out.append(Y.flatten() @ head.fc.weight.double().T + head.fc.bias.double())
    return torch.stack(out)


def trained_bn_head():
    head = make_head()
    head.train()
    with torch.no_grad():
        for seed in range(3):  # non-trivial running statistics
            head(randn(4, 10, 16, seed=30 + seed, dtype=torch.float32) * 2 + 1)
    return head.eval()


def test_head_matches_float64_per_sample_reference():
    head = trained_bn_head()
    tokens = randn(3, 10, 16, seed=33, dtype=torch.float32)
    torch.testing.assert_close(head(tokens).double(), head_reference(head, tokens), rtol=1e-4, atol=1e-5)


def test_head_is_invariant_to_token_order_in_eval_mode():
    head = trained_bn_head()
    tokens = randn(2, 10, 16, seed=34, dtype=torch.float32)
    perm = torch.randperm(10, generator=gen(35))
    torch.testing.assert_close(head(tokens[:, perm]), head(tokens), rtol=1e-5, atol=1e-6)


def test_dropout_hits_only_the_vectorised_feature():
    head = make_head(dropout=0.5).train()
    tokens = randn(4, 10, 16, seed=36, dtype=torch.float32)
    seen = {}
    head.fc.register_forward_pre_hook(lambda m, args: seen.update(x=args[0]))
    torch.manual_seed(1)
    head(tokens)
    features = head.features(tokens)  # train-mode BN: same batch, same statistics
    kept = seen["x"] != 0
    assert 0 < kept.float().mean() < 1
    torch.testing.assert_close(seen["x"][kept], 2.0 * features[kept])
    head.eval()
    torch.testing.assert_close(head(tokens), head(tokens), rtol=0, atol=0)
    torch.testing.assert_close(head(tokens), head.fc(head.features(tokens)))


def build(name="sovit", backbone=TINY, num_classes=5, **overrides):
    adapter = get_method(name)
    torch.manual_seed(0)
    return adapter, adapter.build(num_classes, backbone, adapter.resolve_options(None, overrides), Recipe())


def test_head_runs_in_fp32_under_autocast():
    _, model = build()
    model.eval()
    tokens = randn(2, 1 + 16, 32, seed=37, dtype=torch.float32)
    reference = model.logits(tokens)
    for dtype in (torch.bfloat16, torch.float16):
        with torch.autocast("cpu", dtype=dtype):
            got = model.logits(tokens)
            from_low = model.logits(tokens.to(dtype))  # a backbone under autocast may hand over low precision
        assert got.dtype == from_low.dtype == torch.float32
        torch.testing.assert_close(got, reference, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(from_low, model.logits(tokens.to(dtype).float()), rtol=1e-5, atol=1e-6)


def test_head_has_no_fp16_overflow_at_448px_scale():
    """|cov| ~ 1e3 at N = 784: the original's raw fp16 token sum overflows (65504 / 784 = 83)."""
    _, model = build()
    model.eval()
    tokens = torch.cat([torch.zeros(1, 1, 32), 40.0 * randn(1, 784, 32, seed=38, dtype=torch.float32)], 1)
    head = model.head
    assert cross_covariance(head.proj_p(tokens[:, 1:]), head.proj_q(tokens[:, 1:])).abs().max() > 500
    with torch.autocast("cpu", dtype=torch.float16):
        logits = model.logits(tokens.half())
    assert torch.isfinite(logits).all()


def test_logits_are_the_sum_of_the_two_branches():
    _, model = build()
    model.eval()
    tokens = randn(2, 17, 32, seed=40, dtype=torch.float32)
    both = model.logits(tokens)
    cls_only = model.vit.forward_head(tokens)
    visual_only = model.head(tokens[:, 1:])
    torch.testing.assert_close(both, cls_only + visual_only)
    with torch.no_grad():
        model.head.fc.weight.zero_()
        model.head.fc.bias.zero_()
    torch.testing.assert_close(model.logits(tokens), cls_only)
    _, alone = build(cls_logits=False)
    alone.eval()
    torch.testing.assert_close(alone.logits(tokens), alone.head(tokens[:, 1:]))
    assert isinstance(alone.vit.head, nn.Identity)


# ---------------------------------------------------------------------------------- the adapter


def test_adapter_builds_the_head_on_the_shared_backbone_and_trains():
    adapter, model = build()
    assert auto_head_dims(768) == (96, 48) and auto_head_dims(64) == (16, 8)
    head = model.head
    assert (head.proj_p.fc.out_features, head.proj_q.fc.out_features, head.num_features) == (16, 8, 128)
    assert isinstance(head.drop, nn.Dropout) and head.drop.p == 0.5
    assert model.vit.head.weight.abs().sum() > 0  # So-ViT's cls_fc starts at trunc_normal, not zero
    images, targets = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    model.train()
    out = model(images, targets)
    assert set(out["losses"]) == {"ce"} and out["logits"].shape == (4, 5)
    out["loss"].backward()
    assert model.head.norm.start.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    model.eval()
    assert set(model(images)) == {"logits"}


def test_param_groups_skip_decay_on_1d_params_and_scale_the_new_head():
    adapter, model = build(head_lr_scale=10.0)
    recipe = Recipe(weight_decay=0.05)
    groups = adapter.param_groups(model, recipe)
    params = [p for g in groups for p in g["params"]]
    assert len(params) == len({id(p) for p in params}) == sum(1 for p in model.parameters() if p.requires_grad)
    by_id = {id(p): g for g in groups for p in g["params"]}
    assert by_id[id(model.head.norm.start)]["weight_decay"] == 0.0
    assert by_id[id(model.head.proj_p.bn.weight)]["weight_decay"] == 0.0
    assert by_id[id(model.head.fc.weight)] == {**by_id[id(model.head.fc.weight)], "weight_decay": 0.05, "lr_scale": 10.0}
    assert by_id[id(model.vit.head.weight)]["lr_scale"] == 10.0
    assert by_id[id(model.vit.blocks[0].attn.qkv.weight)]["lr_scale"] == 1.0
    assert by_id[id(model.vit.blocks[0].attn.qkv.weight)]["weight_decay"] == 0.05


def test_variants_and_options_select_the_head():
    _, gap = build(representation="first_order")
    assert isinstance(gap.head, FirstOrderHead)
    _, exact = build(sv_method="svd", d1=6, d2=4)
    assert isinstance(exact.head.norm, SVDPowerNorm) and exact.head.num_features == 24
    _, ones = build(start="ones", sv_num=0, iters=3)
    assert ones.head.norm.start is None and ones.head.norm.sv_num is None and ones.head.norm.iters == 3
    adapter = get_method("sovit")
    assert adapter.resolve_options("dropout70")["dropout"] == 0.7


def test_one_step_deflation_is_refused_and_two_steps_are_stable():
    """After one step X r = s l, so the residual maps the start vector to zero: a one-ulp change of X
    moves the original's own output by ~0.3 (sv_num=2) or ~1e-4 (full deflation), against ~1e-16
    with two steps."""
    X = cross_covariance(torch.relu(randn(3, 20, 8, seed=30)), torch.relu(randn(3, 20, 6, seed=32)))
    start = randn(8, seed=31)
    nudged = X * (1 + torch.finfo(X.dtype).eps)
    for sv_num in (2, None):
        noisy = original_svpn(X, start, iterNum=1, svNum=sv_num)
        assert rel(original_svpn(nudged, start, iterNum=1, svNum=sv_num), noisy) > 1e-8
        assert rel(sv_power_norm(nudged, 0.5, 2, sv_num, start), sv_power_norm(X, 0.5, 2, sv_num, start)) < 1e-12
        with pytest.raises(ValueError, match="iters >= 2"):
            sv_power_norm(X, 0.5, 1, sv_num, start)
    for sv_num in (2, 0):
        with pytest.raises(UsageError, match=f"iters=1 with sv_num={sv_num} .*iters >= 2.*sv_num=0"):
            get_method("sovit").resolve_options(None, {"iters": 1, "sv_num": sv_num})
    assert get_method("sovit").resolve_options(None, {"iters": 1, "sv_num": 2, "sv_method": "svd"})["iters"] == 1


@pytest.mark.parametrize("bad", [{"sv_method": "qr"}, {"start": "zeros"}, {"iters": 0}, {"alpha": 1.5},
                                 {"dropout": 1.0}, {"representation": "third_order"}, {"sv_guard": -1.0},
                                 {"d1": 2.5}, {"head_lr_scale": 0.0}])
def test_bad_options_are_usage_errors(bad):
    with pytest.raises(UsageError, match=next(iter(bad))):
        get_method("sovit").resolve_options(None, bad)


def test_batchnorm_becomes_syncbatchnorm_only_in_multi_process_cuda_runs(monkeypatch):
    def bn_types(model):
        return {type(m) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}

    assert bn_types(build()[1]) == {nn.BatchNorm1d}
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda group=None: 2)
    assert bn_types(build()[1]) == {nn.BatchNorm1d}  # CPU ranks: SyncBatchNorm cannot run there
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert bn_types(build()[1]) == {nn.SyncBatchNorm}
    assert bn_types(build(sync_bn=False)[1]) == {nn.BatchNorm1d}
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda group=None: 1)
    assert bn_types(build()[1]) == {nn.BatchNorm1d}
