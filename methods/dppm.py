"""RAMS-Trans' dynamic patch proposal (DPPM): attention rollout -> patch scores -> mask -> box.

The released code (RAMS-Trans `src/model_rams.py:421-467`, write-up §1.4) does, per image:

1. per layer, the head mean of the attention probabilities, Â = 0.5·(A + I) (its row
   normalisation of A + I), the rollout Â_{L-1}···Â_0 (later layers on the left);
2. patch score = mean over *all* N rows of the rollout, for the patch columns, divided by its max;
3. mask = score > alpha·mean(score) (strict), on the G×G patch grid in raster order;
4. the largest 8-connected component (ties: the component whose first pixel in raster order
   comes first, skimage's label order), its grid bbox (r0, c0, r1, c1), r1/c1 exclusive;
5. pixel box, inclusive: top = max(P·r0 - 1, 0), bottom = P·r1 - 1 (same for columns). The -1
   is an off-by-one of the original (one extra pixel above/left of the patch boundary unless the
   box touches the border); ``offset="exact"`` gives top = P·r0.

Generalised to any grid and patch size (the original hard-codes 14×14 / 32 / 448). An empty mask
(near-uniform or NaN attention; the original raises ValueError) proposes the whole grid, which
makes the crop an identity. The original also draws ``torch.randn(B, 196)`` from the global CPU RNG on
every forward, for a mask buffer it then overwrites; nothing here draws, so in a seeded run every
later draw from that generator (CPU dropout masks, the next epoch's shuffle) differs from the
original's.

Two implementations side by side, same numbers:

- fast, batched on the device (`rollout_scores` = `methods.attention.fast.residual_rollout_column_mean`,
  `patch_boxes`): scores by pushing one row vector through the layers (no N×N×N products), components by 8-neighbour min-label propagation
  with pointer jumping, boxes by masked min/max; no per-sample loop, no host-to-device copy and
  no stream synchronisation (on CUDA the convergence check reads flags copied asynchronously to
  pinned memory, waiting only when it runs a few checks ahead of the device: `ConvergenceFlag`);
- reference, the released code's way (`methods.attention.reference.residual_rollout_column_mean`
  for the scores, `patch_boxes_reference`): a per-sample CPU loop with `scipy.ndimage.label`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from methods.attention.fast import residual_rollout_column_mean

if TYPE_CHECKING:
    from methods.attention.capture import LayerQK

BOX_OFFSETS = ("released", "exact")
EIGHT_CONNECTED = np.ones((3, 3), dtype=int)  # scipy structure = skimage's connectivity=2 on 2-D grids


# ------------------------------------------------------------------------------------- scores


rollout_scores = residual_rollout_column_mean  # the fast scores are the attention toolkit's statistic


def grid_scores(column_means: torch.Tensor, num_prefix: int, grid: tuple[int, int]) -> torch.Tensor:
    """``[B, N]`` rollout column means -> ``[B, Gh, Gw]`` patch scores (prefix tokens dropped,
    row-major patch order as the patch embedding flattens them)."""
    return column_means[:, num_prefix:].reshape(column_means.shape[0], *grid)


# --------------------------------------------------------------------------------- fast path


def threshold_mask(scores: torch.Tensor, alpha: float) -> torch.Tensor:
    """``[B, Gh, Gw]`` scores -> mask ``score/max > alpha·mean(score/max)`` (strict, per image).

    Dividing by the max, as the original does, cannot change the mask except through rounding;
    it is kept so float32 borderline cases round as in the original. NaN scores give no patch.
    """
    flat = scores.flatten(1)
    flat = flat / flat.amax(dim=1, keepdim=True)
    return (flat > alpha * flat.mean(dim=1, keepdim=True)).view_as(scores)


def label_components(mask: torch.Tensor, check_every: int = 4) -> torch.Tensor:
    """8-connected components of ``[B, Gh, Gw]`` boolean masks, batched: ``[B, Gh, Gw]`` long.

    Each foreground cell gets the raster index (r·Gw + c) of its component's first cell in raster
    order, background gets Gh·Gw. Labels start as each cell's own index; every round takes the
    minimum over the 3×3 neighbourhood (a max-pool of the negated labels) and then jumps each label
    to its target's label (lab ← lab[lab], valid because a label is always the index of a cell of
    the same component, no larger than its own). The component minimum can only spread, so the
    fixed point is that minimum everywhere; the loop stops when a round changes nothing (checked
    every `check_every` rounds, without a stream sync on CUDA: `ConvergenceFlag`) and never runs
    more than Gh·Gw rounds, enough for min-propagation alone.
    """
    if mask.ndim != 3:
        raise ValueError(f"mask must be [B, Gh, Gw], got {tuple(mask.shape)}")
    B, Gh, Gw = mask.shape
    n = Gh * Gw
    # float32 holds every index exactly for grids up to 4096×4096 and max_pool2d needs floats
    index = torch.arange(n, device=mask.device, dtype=torch.float32).view(1, Gh, Gw).expand(B, Gh, Gw)
    background = float(n)  # a Python scalar: no host-to-device copy
    labels = torch.where(mask, index, background)
    converged = ConvergenceFlag(mask.device)
    for round_ in range(1, n + 1):
        previous = labels
        neighbourhood_min = -F.max_pool2d(-labels[:, None], kernel_size=3, stride=1, padding=1)[:, 0]
        labels = torch.where(mask, neighbourhood_min, background)
        flat = labels.flatten(1)
        jumped = flat.gather(1, flat.long().clamp(max=n - 1)).view_as(labels)
        labels = torch.where(mask, jumped, background)
        if round_ % check_every == 0 and converged(labels, previous):
            break
    return labels.long()


class ConvergenceFlag:
    """`flag(labels, previous)`: has a labelling round changed nothing, without a stream sync.

    On a CPU it compares directly. On CUDA each check copies a device-side "unchanged" flag into
    pinned host memory asynchronously and records an event; a check reads the flags whose events
    have completed (`Event.query`, which never blocks). The loop may run past the fixed point while
    flags are in flight, which changes nothing (a round maps a fixed point to itself). When
    `max_ahead` flags are pending (the device is still busy with earlier work, e.g. the forward
    pass), the host waits for the oldest by polling its event, so it never queues more than
    `max_ahead` checks of rounds past what the device has done."""

    def __init__(self, device: torch.device, max_ahead: int = 4):
        self.cuda = device.type == "cuda"
        self.max_ahead = max_ahead
        self.pending: list[tuple[torch.Tensor, torch.cuda.Event]] = []

    def __call__(self, labels: torch.Tensor, previous: torch.Tensor) -> bool:
        if not self.cuda:
            return torch.equal(labels, previous)
        host = torch.empty((), dtype=torch.bool, pin_memory=True)
        host.copy_((labels == previous).all(), non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self.pending.append((host, event))
        if len(self.pending) > self.max_ahead:
            while not self.pending[0][1].query():
                pass
        while self.pending and self.pending[0][1].query():
            flag, _ = self.pending.pop(0)
            if bool(flag):
                return True
        return False


def largest_component_boxes(mask: torch.Tensor, check_every: int = 4) -> torch.Tensor:
    """Grid boxes ``[B, 4]`` long ``(r0, c0, r1, c1)`` (r1, c1 exclusive) of the largest
    8-connected component of each ``[Gh, Gw]`` mask; ties go to the component whose first cell in
    raster order comes first; an empty mask gives the whole grid ``(0, 0, Gh, Gw)``."""
    B, Gh, Gw = mask.shape
    n = Gh * Gw
    labels = label_components(mask, check_every).flatten(1)  # [B, n], n = background
    areas = torch.zeros(B, n + 1, dtype=torch.long, device=mask.device)
    areas.scatter_add_(1, labels, torch.ones_like(labels))
    areas[:, n] = 0
    # largest area first, then the smallest label (= first in raster order): one integer key
    roots = torch.arange(n + 1, device=mask.device)
    winner = (areas * (n + 1) + (n - roots)).argmax(dim=1)
    chosen = (labels == winner[:, None]).view(B, Gh, Gw)
    rows = torch.arange(Gh, device=mask.device).view(1, Gh, 1).expand_as(chosen)
    cols = torch.arange(Gw, device=mask.device).view(1, 1, Gw).expand_as(chosen)
    r0 = torch.where(chosen, rows, Gh).amin(dim=(1, 2))
    c0 = torch.where(chosen, cols, Gw).amin(dim=(1, 2))
    r1 = torch.where(chosen, rows, -1).amax(dim=(1, 2)) + 1
    c1 = torch.where(chosen, cols, -1).amax(dim=(1, 2)) + 1
    empty = ~mask.flatten(1).any(dim=1)  # the whole grid (0, 0, Gh, Gw), from scalars: no host copy
    return torch.stack([torch.where(empty, bound, side) for bound, side in ((0, r0), (0, c0), (Gh, r1), (Gw, c1))],
                       dim=1)


def pixel_boxes(grid_boxes: torch.Tensor, patch: int, offset: str = "released") -> torch.Tensor:
    """Grid boxes ``(r0, c0, r1, c1)`` (exclusive ends) -> inclusive pixel boxes
    ``(top, left, bottom, right)``: released ``max(P·r0 - 1, 0)`` / ``P·r1 - 1``, exact ``P·r0``."""
    if offset not in BOX_OFFSETS:
        raise ValueError(f"offset must be one of {', '.join(BOX_OFFSETS)}, got {offset!r}")
    start, end = grid_boxes[:, :2] * patch, grid_boxes[:, 2:] * patch - 1
    if offset == "released":
        start = (start - 1).clamp(min=0)
    return torch.cat([start, end], dim=1)


def patch_boxes(scores: torch.Tensor, alpha: float, patch: int, offset: str = "released") -> torch.Tensor:
    """Patch scores ``[B, Gh, Gw]`` -> ``[B, 4]`` long ``(top, left, bottom, right)``, inclusive pixel
    indices of the proposal (batched on the scores' device; see the module docstring)."""
    if scores.ndim != 3:
        raise ValueError(f"scores must be [B, Gh, Gw], got {tuple(scores.shape)}")
    return pixel_boxes(largest_component_boxes(threshold_mask(scores, alpha)), patch, offset)


# ---------------------------------------------------------------------------- reference path


def largest_component_box_reference(mask: np.ndarray) -> tuple[int, int, int, int]:
    """One ``[Gh, Gw]`` mask -> grid box ``(r0, c0, r1, c1)``: `scipy.ndimage.label` with a 3×3
    structure (labels in raster order of each component's first pixel, as skimage's), areas by
    bincount, the first maximal label; an empty mask gives the whole grid."""
    labels, count = ndimage.label(mask, structure=EIGHT_CONNECTED)
    if count == 0:
        return 0, 0, mask.shape[0], mask.shape[1]
    winner = int(np.argmax(np.bincount(labels.ravel())[1:])) + 1
    rows, cols = np.nonzero(labels == winner)
    return int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1


def patch_boxes_reference(scores: torch.Tensor, alpha: float, patch: int, offset: str = "released") -> torch.Tensor:
    """`patch_boxes` the released code's way: a per-sample loop on the CPU (a host sync per image),
    numpy threshold, scipy labelling. Returns the boxes on the scores' device."""
    if scores.ndim != 3:
        raise ValueError(f"scores must be [B, Gh, Gw], got {tuple(scores.shape)}")
    grid_boxes = []
    for sample in scores.detach():
        # numpy has no bfloat16: 16-bit scores widen to float32 (the released code's dtype)
        s = sample.cpu().to(torch.promote_types(sample.dtype, torch.float32)).numpy()
        with np.errstate(invalid="ignore", divide="ignore"):  # all-zero or NaN scores: empty mask
            s = s / s.max()
            mask = s > alpha * s.mean()
        grid_boxes.append(largest_component_box_reference(mask))
    grid = torch.tensor(grid_boxes, dtype=torch.long).reshape(-1, 4)
    return pixel_boxes(grid, patch, offset).to(scores.device)
