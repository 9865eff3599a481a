"""`sovit`: So-ViT's second-order head on the shared ViT (Xie et al., arXiv:2104.10935, code at c2d076e).

The final-norm visual tokens go through two per-token projections (bias-free Linear, BatchNorm over
all B*N tokens, ReLU) to d1 and d2 channels; their centred cross-covariance X = PᵀQ / N (d1 x d2)
is normalised by the fast singular-value power normalisation (svPN), flattened whole (not the upper
triangle: X is not square), dropped out, and mapped to logits that are *added* to the class-token
logits; one cross-entropy on the sum. The head runs in fp32 under any autocast: in fp16 the
cross-covariance overflows at 448 px (write-up §6).

Public maths, used by the tests and by `methods.sovit_arch` (the original So-ViT-7/10/14/19):

- `cross_covariance(P, Q)`: centred (1/N) PᵀQ per sample;
- `sv_power_norm(X, ...)`: the original's fast svPN (power iteration from a learnable start vector,
  deflation, residual rescaled by the last singular value) -- the fast path;
- `sv_power_norm_exact(X, alpha)`: U diag(s^alpha) Vᵀ by SVD -- the operator it approximates, the
  slow obviously-correct reference.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import torch
import torch.distributed as dist
import torch.nn.functional as F
from timm.layers import trunc_normal_
from torch import nn

from bench.errors import UsageError
from methods.attention.fast import wide
from methods.backbone import BackboneConfig, create_vit
from methods.base import MethodAdapter, method_output
from methods.registry import register_method

SVPN_EPS = 1e-5  # added to s^(1-alpha) before dividing the residual (SV:src/normalization/svPN.py)
NORMALIZE_EPS = 1e-12  # F.normalize's default, as in the original power iteration
DEFAULT_GUARD = 1e-6  # floor on the estimated singular values before any power (0 = the original)
# With one power-iteration step, X r = s l exactly, so the deflated residual sends the shared start
# vector to zero: every singular value after the first is amplified rounding noise (a one-ulp change
# of X moves the output by ~0.2 relative, in float64 as in float32). Two steps or more are stable.
UNSTABLE_DEFLATION = ("iters=1 with sv_num={sv_num} deflates rounding noise (after one step the residual "
                      "annihilates the start vector); use sv_num=1 (any iters), or iters >= 2 with sv_num >= 2 "
                      "or sv_num=0 (full deflation: stable from iters=2, nearer exact svPN as iters grows)")


# --------------------------------------------------------------------------------------------- maths


def cross_covariance(P: torch.Tensor, Q: torch.Tensor) -> torch.Tensor:
    """Centred cross-covariance `[B, N, d1], [B, N, d2] -> [B, d1, d2]`: (P - mean)ᵀ(Q - mean) / N.

    Divides by N, not N-1, like the original; the mean is per channel over the tokens.
    """
    if P.shape[:2] != Q.shape[:2]:
        raise ValueError(f"P {tuple(P.shape)} and Q {tuple(Q.shape)} must share batch and token dimensions")
    n = P.shape[1]
    P = P - P.mean(dim=1, keepdim=True)
    Q = Q - Q.mean(dim=1, keepdim=True)
    return torch.bmm(P.transpose(1, 2), Q) / n


def power_iteration(X: torch.Tensor, left: torch.Tensor, iters: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`iters` alternating normalised mat-vecs from `left` ([B, d1]); returns (left, s, right).

    s = leftᵀ X right = ||X right|| >= 0, a lower bound of the top singular value. The original
    runs the same recursion on Xᵀ with its start vector on the d1 side (SV:svPN.py:74-87).
    """
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    for _ in range(iters):
        right = F.normalize(torch.einsum("bij,bi->bj", X, left), dim=1, eps=NORMALIZE_EPS)
        left = F.normalize(torch.einsum("bij,bj->bi", X, right), dim=1, eps=NORMALIZE_EPS)
    s = torch.einsum("bi,bij,bj->b", left, X, right)
    return left, s, right


def sv_power_norm(
    X: torch.Tensor,
    alpha: float = 0.5,
    iters: int = 1,
    sv_num: int | None = 1,
    start: torch.Tensor | None = None,
    *,
    eps: float = SVPN_EPS,
    guard: float = DEFAULT_GUARD,
) -> torch.Tensor:
    """So-ViT's fast singular-value power normalisation of `X` `[B, d1, d2]` (fast path).

    For i = 1..k (k = `sv_num`, or min(d1, d2) when None): a power iteration on the residual R
    (initially X) from `start` gives (l_i, s_i, r_i); the output gains s_i^alpha l_i r_iᵀ and R loses
    s_i l_i r_iᵀ. With `sv_num` given, R / (s_k^(1-alpha) + eps) is added too, so with k = 1 the
    result is X / sqrt(s_1) up to eps: the top singular value maps to s_1^alpha and every other s_j
    to s_j * s_1^(alpha-1). With `sv_num=None` there is no residual term: full svPN by deflation.

    `start`: the `[d1]` (or `[B, d1]`) start vector, a learnable parameter in the head; None = all
    ones (the original's `init_weight='one'`). `guard`: estimated singular values are clamped to at
    least this before any power. The original (guard 0) has a NaN gradient when an s_i is exactly
    0 (all-zero input, or deflating a rank-deficient X), since d/ds s^alpha is infinite there; a
    guard of 1e-6 changes nothing for any s_i above it. Works in the input's dtype.

    ``iters=1`` with ``sv_num != 1`` is refused (ValueError): one step leaves X r_1 = s_1 l_1 exactly,
    so the deflated residual maps the start vector to zero and every further s_i is rounding noise.
    """
    if X.ndim != 3:
        raise ValueError(f"X must be [B, d1, d2], got {tuple(X.shape)}")
    if sv_num is not None and sv_num < 1:
        raise ValueError(f"sv_num must be >= 1 or None (every singular value), got {sv_num}")
    if iters == 1 and sv_num != 1:
        raise ValueError(UNSTABLE_DEFLATION.format(sv_num=0 if sv_num is None else sv_num))
    batch, d1, d2 = X.shape
    if start is None:
        start = X.new_ones(d1)
    start = start.to(X.dtype).expand(batch, d1)
    k = min(d1, d2) if sv_num is None else sv_num
    residual, out, s = X, None, None
    for _ in range(k):
        left, s, right = power_iteration(residual, start, iters)
        rank1 = left.unsqueeze(2) * right.unsqueeze(1)
        term = _floor(s, guard).pow(alpha)[:, None, None] * rank1
        out = term if out is None else out + term
        residual = residual - s[:, None, None] * rank1
    if sv_num is not None:
        out = out + residual / (_floor(s, guard).pow(1.0 - alpha)[:, None, None] + eps)
    return out


def sv_power_norm_exact(X: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """Exact svPN, U diag(s^alpha) Vᵀ by SVD: the operator the fast path approximates (reference)."""
    U, S, Vh = torch.linalg.svd(X, full_matrices=False)
    return (U * S.pow(alpha).unsqueeze(-2)) @ Vh


def _floor(s: torch.Tensor, guard: float) -> torch.Tensor:
    return s.clamp_min(guard) if guard > 0 else s


# ------------------------------------------------------------------------------------------- modules


class TokenProjection(nn.Module):
    """Per-token bias-free Linear, BatchNorm over all B*N tokens, ReLU.

    The original's 1x1 conv + BatchNorm2d + ReLU on the tokens laid out as a (B, C, N, 1) map, with
    its init (kaiming-normal fan_out; SV:src/representation/covariance.py).
    """

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.fc = nn.Linear(in_dim, out_dim, bias=False)
        self.bn = nn.BatchNorm1d(out_dim)
        nn.init.kaiming_normal_(self.fc.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        y = self.fc(tokens)
        return F.relu(self.bn(y.flatten(0, 1)).view_as(y))


class SVPowerNorm(nn.Module):
    """`sv_power_norm` with its start vector as a parameter (randn, like the original) or all ones."""

    def __init__(self, dim: int, alpha: float, iters: int, sv_num: int | None, start: str, guard: float):
        super().__init__()
        self.alpha, self.iters, self.sv_num, self.guard = alpha, iters, sv_num, guard
        self.start = nn.Parameter(torch.randn(dim)) if start == "learn" else None

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return sv_power_norm(X, self.alpha, self.iters, self.sv_num, self.start, guard=self.guard)


class SVDPowerNorm(nn.Module):
    """Exact svPN by SVD (ablation; its gradient is ill-conditioned near repeated singular values)."""

    def __init__(self, alpha: float):
        super().__init__()
        self.alpha = alpha

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return sv_power_norm_exact(X, self.alpha)


class SecondOrderHead(nn.Module):
    """Projections -> cross-covariance -> svPN -> full flatten -> dropout -> Linear(d1*d2, K)."""

    def __init__(self, in_dim: int, d1: int, d2: int, num_classes: int, norm: nn.Module, dropout: float):
        super().__init__()
        self.proj_p = TokenProjection(in_dim, d1)
        self.proj_q = TokenProjection(in_dim, d2)
        self.norm = norm
        self.drop = nn.Dropout(dropout)  # inside svPN in the original: only the vectorised feature
        self.fc = nn.Linear(d1 * d2, num_classes)
        init_linear(self.fc)

    @property
    def num_features(self) -> int:
        return self.fc.in_features

    def features(self, tokens: torch.Tensor) -> torch.Tensor:
        """The normalised, flattened (row-major) second-order feature `[B, d1*d2]`, before dropout."""
        X = cross_covariance(self.proj_p(tokens), self.proj_q(tokens))
        return self.norm(X).flatten(1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(self.features(tokens)))


class FirstOrderHead(nn.Module):
    """Average of the visual tokens -> Linear (the original's `re_type='first-order'` ablation)."""

    def __init__(self, in_dim: int, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(in_dim, num_classes)
        init_linear(self.fc)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.fc(tokens.mean(dim=1))


def init_linear(fc: nn.Linear) -> None:
    """So-ViT's Linear init: trunc_normal(std .02), zero bias (SV:src/so_vit.py:92-96)."""
    trunc_normal_(fc.weight, std=0.02)
    nn.init.zeros_(fc.bias)


class SoViTClassifier(nn.Module):
    """A timm ViT (`forward_features` = final-norm tokens) plus a visual-token head, in fp32.

    logits = ViT head on the class token + head on the visual tokens (a plain sum, no gate).
    """

    def __init__(self, vit: nn.Module, head: nn.Module, cls_logits: bool = True, label_smoothing: float = 0.0,
                 head_lr_scale: float = 1.0):
        super().__init__()
        self.vit = vit
        self.head = head
        self.cls_logits = cls_logits
        self.label_smoothing = label_smoothing
        self.head_lr_scale = head_lr_scale
        if not cls_logits:
            vit.reset_classifier(0)  # no unused class-token Linear (DDP would complain)

    def new_parameters(self) -> list[nn.Parameter]:
        """Parameters a pretrained backbone does not provide: the two classifiers and the head."""
        return [*self.head.parameters(), *self.vit.head.parameters()]

    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits from the final-norm tokens `[B, prefix + N, C]`, computed in float32 or wider (float64 stays)."""
        with torch.autocast(device_type=tokens.device.type, enabled=False):
            tokens = wide(tokens)
            logits = self.head(tokens[:, self.vit.num_prefix_tokens:])
            if self.cls_logits:
                logits = logits + self.vit.forward_head(tokens)
        return logits

    def forward(self, images: torch.Tensor, targets: torch.Tensor | None = None):
        logits = self.logits(self.vit.forward_features(images))
        if targets is None:
            return method_output(logits)
        ce = F.cross_entropy(logits, targets, label_smoothing=self.label_smoothing)
        return method_output(logits, loss=ce, losses={"ce": ce})


# ----------------------------------------------------------------------------------- head registry


def _power_norm(dim: int, o: Mapping[str, Any]) -> nn.Module:
    return SVPowerNorm(dim, o["alpha"], o["iters"], o["sv_num"] or None, o["start"], o["sv_guard"])


def _svd_norm(dim: int, o: Mapping[str, Any]) -> nn.Module:
    return SVDPowerNorm(o["alpha"])


def _second_order(dim: int, dims: tuple[int, int], num_classes: int, o: Mapping[str, Any]) -> nn.Module:
    return SecondOrderHead(dim, *dims, num_classes, SV_METHODS[o["sv_method"]](dims[0], o), o["dropout"])


def _first_order(dim: int, dims: tuple[int, int], num_classes: int, o: Mapping[str, Any]) -> nn.Module:
    return FirstOrderHead(dim, num_classes)


SV_METHODS: Mapping[str, Callable[..., nn.Module]] = {"power": _power_norm, "svd": _svd_norm}
HEADS: Mapping[str, Callable[..., nn.Module]] = {"second_order": _second_order, "first_order": _first_order}
START_VECTORS = ("learn", "ones")

HEAD_OPTIONS: Mapping[str, Any] = {
    "representation": "second_order",  # or first_order (token average; ablation)
    "d1": 0,  # projection widths; 0 = the adapter's default
    "d2": 0,
    "alpha": 0.5,  # svPN exponent
    "iters": 1,  # power-iteration steps
    "sv_num": 1,  # singular values deflated; 0 = all (no residual term)
    "start": "learn",  # power-iteration start: learn (randn, trained) or ones
    "sv_method": "power",  # power (the original's fast svPN) or svd (exact; ablation)
    "sv_guard": DEFAULT_GUARD,  # floor on singular values before the powers; 0 = the original (NaN grad at 0)
    "dropout": 0.5,  # on the flattened second-order feature
    "cls_logits": True,  # add the class-token logits (false: visual-token head alone)
    "sync_bn": True,  # SyncBatchNorm in multi-process CUDA runs
}


def auto_head_dims(embed_dim: int) -> tuple[int, int]:
    """d1 x d2 scaled with the width: C/8 x C/16 (96 x 48 on ViT-B), at least 16 x 8 (tiny preset)."""
    return max(16, embed_dim // 8), max(8, embed_dim // 16)


def build_head(options: Mapping[str, Any], embed_dim: int, num_classes: int, dims: tuple[int, int]) -> nn.Module:
    dims = (options["d1"] or dims[0], options["d2"] or dims[1])
    return HEADS[options["representation"]](embed_dim, dims, num_classes, options)


def multi_process_cuda() -> bool:
    """True in a multi-process run on CUDA: the case SyncBatchNorm supports and needs.

    On CPU ranks (gloo) SyncBatchNorm raises; DDP's buffer broadcast from rank 0 keeps the running
    statistics equal there, only the per-batch statistics stay per rank.
    """
    return (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
            and torch.cuda.is_available())


def maybe_sync_batchnorm(model: nn.Module, enabled: bool) -> nn.Module:
    return nn.SyncBatchNorm.convert_sync_batchnorm(model) if enabled and multi_process_cuda() else model


# ------------------------------------------------------------------------------------------ adapters


class SoViTAdapterBase(MethodAdapter):
    """Options, checks and optimizer groups shared by `sovit` and the original `sovitN`."""

    family = "sovit"
    reference = ("Xie et al., So-ViT: Mind Visual Tokens for Vision Transformer, arXiv:2104.10935; "
                 "github.com/jiangtaoxie/So-ViT @ c2d076e")

    def check_options(self, options: Mapping[str, Any]) -> None:
        problems = []
        if options["representation"] not in HEADS:
            problems.append(f"representation must be one of {', '.join(HEADS)} (got {options['representation']!r})")
        if options["sv_method"] not in SV_METHODS:
            problems.append(f"sv_method must be one of {', '.join(SV_METHODS)} (got {options['sv_method']!r})")
        if options["start"] not in START_VECTORS:
            problems.append(f"start must be one of {', '.join(START_VECTORS)} (got {options['start']!r})")
        for key, low in (("d1", 0), ("d2", 0), ("iters", 1), ("sv_num", 0)):
            if isinstance(options[key], bool) or not isinstance(options[key], int) or options[key] < low:
                problems.append(f"{key} must be an integer >= {low} (got {options[key]!r})")
        if not 0.0 <= options["alpha"] <= 1.0:
            problems.append(f"alpha must be in [0, 1] (got {options['alpha']})")
        if (options["representation"] == "second_order" and options["sv_method"] == "power"
                and options["iters"] == 1 and options["sv_num"] != 1):
            problems.append(UNSTABLE_DEFLATION.format(sv_num=options["sv_num"]))
        if options["sv_guard"] < 0:
            problems.append(f"sv_guard must be >= 0 (got {options['sv_guard']})")
        if not 0.0 <= options["dropout"] < 1.0:
            problems.append(f"dropout must be in [0, 1) (got {options['dropout']})")
        if options.get("head_lr_scale", 1.0) <= 0:
            problems.append(f"head_lr_scale must be > 0 (got {options['head_lr_scale']})")
        if problems:
            raise UsageError(f"bad options for {self.name}: " + "; ".join(problems))

    def param_groups(self, model: nn.Module, recipe):
        """timm's `create_optimizer` rule of the original: no weight decay on 1-D parameters and biases
        (BatchNorm, LayerNorm, the svPN start vector); the new head at `head_lr_scale` x lr."""
        new = {id(p) for p in model.new_parameters()}
        groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
        for name, p in model.named_parameters():
            if p.requires_grad:
                groups.setdefault((p.ndim <= 1 or name.endswith(".bias"), id(p) in new), []).append(p)
        return [{"params": params, "weight_decay": 0.0 if no_decay else recipe.weight_decay,
                 "lr_scale": model.head_lr_scale if is_new else 1.0}
                for (no_decay, is_new), params in sorted(groups.items())]


@register_method
class SoViT(SoViTAdapterBase):
    name = "sovit"
    summary = "So-ViT head: cross-covariance of projected tokens, fast svPN, logits summed with the class token's"
    options = {**HEAD_OPTIONS, "head_lr_scale": 1.0}
    variants = {
        "dropout70": {"dropout": 0.7},  # the sweep value for the small sets (SoT-Base's dropout)
        "gap": {"representation": "first_order"},  # first-order baseline of the same head
        "exact": {"sv_method": "svd"},  # exact svPN by SVD instead of one power-iteration step
    }
    recipe = {}  # the shared-backbone recipe of the other adapters (So-ViT published no FGVC results)

    def build(self, num_classes: int, backbone: BackboneConfig, options, recipe) -> nn.Module:
        vit = create_vit(backbone, num_classes)
        init_linear(vit.head)  # So-ViT's cls_fc starts at trunc_normal(.02), not at zero
        head = build_head(options, backbone.embed_dim, num_classes, auto_head_dims(backbone.embed_dim))
        model = SoViTClassifier(vit, head, options["cls_logits"], recipe.label_smoothing, options["head_lr_scale"])
        return maybe_sync_batchnorm(model, options["sync_bn"])
