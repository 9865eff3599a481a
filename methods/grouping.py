"""Part grouping and its shaping loss (Huang & Li, "Interpretable and Accurate Fine-grained Recognition
via Region Grouping", CVPR 2020; code zxhuang1698/interpretability-by-parts), as Mix-ViT's part model
uses them (MixViT models/grouping.py, utils/loss.py; write-up §2.3, §3).

- `GroupingUnit(channels, parts)`: soft assignment of every feature-map position to K learned
  centres, softmax_k(min(0, 2 c_k·x - |x|² - |c_k|²) / β_k) with β_k = sigmoid(s_k); per part the
  assignment-weighted mean minus the centre, divided by sqrt(β_k / 2), L2-normalised over channels.
  `[B, C, H, W] -> ([B, C, K] part features, [B, K, H, W] assignment)`. Runs in float32 or wider
  under autocast: |x|² of a 1024-channel feature overflows fp16.
- `shaping_loss(assign, prior, kernel)`: Gaussian blur without padding, per-part spatial max,
  sorted over the batch, mean |log(· + eps) - log(prior + eps)| against the quantiles of a
  Beta(alpha, beta) prior at (2i + 1) / 2B (`beta_prior`). The original rebuilds the kernel and
  the prior (with scipy, on the host) every step; `ShapingLoss` caches both.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from methods.attention.fast import wide

SHAPING_EPS = 1e-5


class GroupingUnit(nn.Module):
    def __init__(self, in_channels: int, num_parts: int):
        super().__init__()
        self.in_channels, self.num_parts = in_channels, num_parts
        self.centers = nn.Parameter(torch.empty(num_parts, in_channels))
        self.smooth_factor = nn.Parameter(torch.zeros(num_parts))  # beta = sigmoid(0) = 0.5 at start
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The original's `reset_parameters(None, None)`: kaiming-normal centres (fan-in C) clamped to
        >= 1e-5, smoothing logits 0."""
        nn.init.kaiming_normal_(self.centers)  # fan-in = C, like the original's (K, C, 1, 1) weight
        with torch.no_grad():
            self.centers.clamp_(min=1e-5)
        nn.init.zeros_(self.smooth_factor)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(device_type=features.device.type, enabled=False):
            x = wide(features).flatten(2)  # [B, C, HW]
            c = self.centers.to(x.dtype)
            beta = torch.sigmoid(self.smooth_factor.to(x.dtype))  # [K]
            cx = torch.einsum("kc,bcn->bkn", c, x)
            distance = 2 * cx - x.pow(2).sum(1, keepdim=True) - c.pow(2).sum(1)[None, :, None]
            assign = torch.softmax(distance.clamp(max=0.0) / beta[None, :, None], dim=1)  # [B, K, HW]
            weighted = torch.einsum("bkn,bcn->bkc", assign, x)
            mass = assign.sum(dim=2, keepdim=True).clamp(min=1e-5)
            residual = (weighted / mass - c) / (beta / 2).sqrt()[None, :, None]
            parts = F.normalize(residual, dim=2).transpose(1, 2)  # [B, C, K]
        return parts, assign.view(*assign.shape[:2], *features.shape[2:])


def gaussian_kernel(radius: int, std: float) -> torch.Tensor:
    """``[2r+1, 2r+1]`` normalised Gaussian weights exp(-(i² + j²) / 2σ²)."""
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * std * std))
    return weights / weights.sum()


def beta_prior(batch: int, alpha: float, beta: float) -> torch.Tensor:
    """Quantiles of Beta(alpha, beta) at (2i + 1) / 2B, i = 0..B-1: ``[B, 1]`` (float64)."""
    from scipy import stats

    grid = (2 * torch.arange(batch, dtype=torch.float64) + 1) / (2 * batch)
    return torch.from_numpy(stats.beta.ppf(grid.numpy(), a=alpha, b=beta)).unsqueeze(1)


def shaping_loss(assign: torch.Tensor, prior: torch.Tensor, kernel: torch.Tensor | None,
                 eps: float = SHAPING_EPS) -> torch.Tensor:
    """Wasserstein shaping loss of assignment maps ``[B, K, H, W]`` against a ``[B, 1]`` prior."""
    assign = wide(assign)
    K = assign.shape[1]
    if kernel is not None:
        weight = kernel.to(assign)[None, None].expand(K, 1, *kernel.shape)
        assign = F.conv2d(assign, weight, groups=K)  # no padding, as the original
    occurrence = assign.amax(dim=(2, 3))  # [B, K]
    empirical = occurrence.sort(dim=0).values
    return ((empirical + eps).log() - (prior.to(empirical) + eps).log()).abs().mean()


class ShapingLoss(nn.Module):
    """`shaping_loss` with the kernel and the per-batch-size prior computed once per device, in
    float64 (not buffers: a model cast to bf16 must not round them)."""

    def __init__(self, radius: int = 2, std: float = 0.4, alpha: float = 1.0, beta: float = 0.001):
        super().__init__()
        self.radius, self.std, self.alpha, self.beta = radius, std, alpha, beta
        self._cache: dict[tuple, torch.Tensor] = {}

    def kernel(self, device: torch.device) -> torch.Tensor | None:
        if not self.radius:
            return None
        if ("kernel", device) not in self._cache:
            self._cache["kernel", device] = gaussian_kernel(self.radius, self.std).to(device)
        return self._cache["kernel", device]

    def prior(self, batch: int, device: torch.device) -> torch.Tensor:
        """The ``[B, 1]`` prior on `device`, computed (scipy, on the host) once per batch size."""
        if ("prior", batch, device) not in self._cache:
            self._cache["prior", batch, device] = beta_prior(batch, self.alpha, self.beta).to(device)
        return self._cache["prior", batch, device]

    def forward(self, assign: torch.Tensor) -> torch.Tensor:
        if self.radius and min(assign.shape[-2:]) <= 2 * self.radius:
            raise ValueError(f"assignment maps {tuple(assign.shape[-2:])} are too small for a "
                             f"{2 * self.radius + 1}x{2 * self.radius + 1} blur without padding")
        return shaping_loss(assign, self.prior(assign.shape[0], assign.device), self.kernel(assign.device))
