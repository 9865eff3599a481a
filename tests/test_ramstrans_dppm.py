"""RAMS-Trans DPPM: rollout scores, batched components and boxes, crop-and-zoom, against references.

Expected boxes are those of the write-up's §8 (computed there with the released logic). References:
`scipy.ndimage.label` per mask, explicit float64 rollout products, per-image slice + interpolate.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from methods.attention import LayerQK, reference
from methods.dppm import (
    grid_scores,
    label_components,
    largest_component_box_reference,
    largest_component_boxes,
    patch_boxes_reference,
    rollout_scores,
    threshold_mask,
)
from methods.ramstrans import crop_zoom, crop_zoom_reference, patch_boxes

pytestmark = pytest.mark.usefixtures("single_thread")

HOT = math.log(50.0)  # §8: "hot" query rows put logit log(50) on the cells of a set, 0 elsewhere


def hot_layers(G: int, cells, cls_cells=None, depth: int = 1, heads: int = 1) -> list[LayerQK]:
    """Layers whose every patch row is hot on `cells` and whose two class rows are hot on
    `cls_cells` (default: the same cells), identical in every layer and head. q·k = logit."""
    N = 2 + G * G
    cls_cells = cells if cls_cells is None else cls_cells
    q = torch.zeros(1, heads, N, 2, dtype=torch.float64)
    q[..., :2, 0] = 1.0  # the class rows read key channel 0
    q[..., 2:, 1] = 1.0  # the patch rows read key channel 1
    k = torch.zeros(1, heads, N, 2, dtype=torch.float64)
    for channel, chosen in ((0, cls_cells), (1, cells)):
        for r, c in chosen:
            k[..., 2 + r * G + c, channel] = HOT
    return [LayerQK(q=q, k=k, scale=1.0) for _ in range(depth)]


def block(rows, cols):
    return [(r, c) for r in rows for c in cols]


def boxes_both_ways(layers, G: int, patch: int) -> tuple[list[int], list[int]]:
    fast = patch_boxes(grid_scores(rollout_scores(layers), 2, (G, G)), 1.2, patch)
    slow = patch_boxes_reference(grid_scores(reference.residual_rollout_column_mean(layers), 2, (G, G)), 1.2, patch)
    return fast[0].tolist(), slow[0].tolist()


@pytest.mark.parametrize("cells, expected", [
    (block(range(3), range(3)), [0, 0, 95, 95]),  # §8.5 corner: a 96x96 slice
    (block(range(11, 14), range(11, 14)), [351, 351, 447, 447]),  # §8.6 off-by-one: 97x97
    (block(range(4, 7), range(8, 12)), [127, 255, 223, 383]),  # §8.6 rows = height, cols = width
])
def test_hot_spots_give_the_write_up_boxes(cells, expected):
    fast, slow = boxes_both_ways(hot_layers(14, cells, depth=12, heads=2), 14, 32)
    assert fast == expected and slow == expected


def test_scores_average_all_rows_not_the_class_row():
    """§8.3: class rows hot top-left, patch rows hot bottom-right -> the patch rows win."""
    layers = hot_layers(14, block(range(10, 14), range(10, 14)), cls_cells=block(range(3), range(3)))
    fast, slow = boxes_both_ways(layers, 14, 32)
    assert fast == slow == [319, 319, 447, 447]


def box_of_cells(cells, G=14, patch=32, offset="released"):
    scores = torch.zeros(1, G, G, dtype=torch.float64)
    for r, c in cells:
        scores[0, r, c] = 1.0
    fast = patch_boxes(scores, 1.2, patch, offset)[0].tolist()
    assert fast == patch_boxes_reference(scores, 1.2, patch, offset)[0].tolist()
    return fast


def test_eight_connectivity_and_tie_breaks():
    # §8.8: a diagonal chain of 3 beats a horizontal pair (4-connectivity would pick the pair)
    assert box_of_cells([(0, 0), (1, 1), (2, 2), (5, 5), (5, 6)]) == [0, 0, 95, 95]
    # §8.9: equal areas -> the component whose first pixel in raster order comes first
    assert box_of_cells(block([10, 11], [0, 1]) + block([0, 1], [12, 13])) == [0, 383, 63, 447]
    assert box_of_cells([(5, 0), (5, 1), (5, 2), (0, 10), (1, 10), (2, 10)]) == [0, 319, 95, 351]


def test_exact_offset_drops_the_released_off_by_one():
    cells = block(range(4, 7), range(8, 12))
    assert box_of_cells(cells, offset="exact") == [128, 256, 223, 383]
    assert box_of_cells(cells, patch=16, G=28) == [63, 127, 111, 191]  # any patch and grid (§8.17)


def test_threshold_is_strict_relative_to_the_mean_and_monotone_in_alpha():
    # mean 0.625, 1.2 * 0.625 == 0.75 exactly: the 0.75 patch is not selected
    scores = torch.tensor([[[1.0, 0.75], [0.5, 0.25]]], dtype=torch.float64)
    assert threshold_mask(scores, 1.2).tolist() == [[[True, False], [False, False]]]
    assert patch_boxes(scores, 1.2, 32).tolist() == [[0, 0, 31, 31]]
    g = torch.Generator().manual_seed(0)
    random = torch.rand(64, 8, 8, generator=g, dtype=torch.float64)
    masks = [threshold_mask(random, a) for a in (0.8, 1.0, 1.2, 1.5, 2.0)]
    assert all(bool((high <= low).all()) for low, high in zip(masks, masks[1:]))
    assert not all(torch.equal(low, high) for low, high in zip(masks, masks[1:]))
    # §8.11: a positive scale never changes the mask (checked in float64, no borderline scores)
    assert torch.equal(threshold_mask(random * 37.5, 1.2), masks[2])


def test_empty_mask_proposes_the_whole_image_and_an_identity_crop():
    """§8.12: uniform attention -> no patch above 1.2x the mean (the original raises ValueError)."""
    uniform = [LayerQK(q=torch.zeros(2, 1, 2 + 64, 1), k=torch.zeros(2, 1, 2 + 64, 1), scale=1.0)]
    scores = grid_scores(rollout_scores(uniform), 2, (8, 8))
    assert not threshold_mask(scores, 1.2).any()
    boxes = patch_boxes(scores, 1.2, 8)
    assert boxes.tolist() == [[0, 0, 63, 63]] * 2
    assert patch_boxes_reference(scores, 1.2, 8).tolist() == boxes.tolist()
    nan = torch.full((1, 8, 8), float("nan"))  # diverged attention: NaN > t is False
    assert patch_boxes(nan, 1.2, 8).tolist() == [[0, 0, 63, 63]]
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    assert torch.equal(crop_zoom(x, boxes, 64), x)
    assert torch.equal(crop_zoom_reference(x, boxes, 64), x)


# --------------------------------------------------------------------- components vs scipy


def first_pixel_labels(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """scipy's 8-connected labelling with each component named by its first raster index
    (background = mask size), and the component areas."""
    labels, _ = ndimage.label(mask, structure=np.ones((3, 3), dtype=int))
    flat = labels.ravel()
    ids, first = np.unique(flat, return_index=True)
    names = np.full(ids.max() + 1, mask.size)
    names[ids[ids > 0]] = first[ids > 0]
    return names[flat].reshape(mask.shape), np.bincount(flat)[1:]


def random_masks(count: int, shape: tuple[int, int], seed: int) -> torch.Tensor:
    """Masks of mixed densities (0 to 1), so ties between equal components, empty and full masks occur."""
    g = torch.Generator().manual_seed(seed)
    density = torch.linspace(0.0, 1.0, count, dtype=torch.float64)[:, None, None]
    return torch.rand(count, *shape, generator=g, dtype=torch.float64) < density


@pytest.mark.parametrize("shape, count", [((14, 14), 3000), ((8, 8), 1500), ((5, 11), 500)])
def test_batched_components_and_boxes_equal_scipy_on_thousands_of_masks(shape, count):
    masks = random_masks(count, shape, seed=count)
    labels = label_components(masks).numpy()
    boxes = largest_component_boxes(masks).tolist()
    ties = 0
    for i, mask in enumerate(masks.numpy()):
        want, areas = first_pixel_labels(mask)
        np.testing.assert_array_equal(labels[i], want, err_msg=f"mask {i}")
        assert boxes[i] == list(largest_component_box_reference(mask)), f"mask {i}"
        ties += int(len(areas) > 1 and (areas == areas.max()).sum() > 1)
    assert ties > 20  # the tie-break was exercised


def test_components_converge_on_a_snake():
    """The longest path on a 14x14 grid (a serpentine): one component, labelled 0 everywhere."""
    mask = torch.zeros(14, 14, dtype=torch.bool)
    mask[::2] = True
    for r in range(1, 14, 2):
        mask[r, 13 if r % 4 == 1 else 0] = True
    labels = label_components(mask[None])[0]
    assert torch.equal(labels[mask], torch.zeros(int(mask.sum()), dtype=torch.long))
    assert torch.equal(labels[~mask], torch.full((int((~mask).sum()),), 196))
    np.testing.assert_array_equal(labels.numpy(), first_pixel_labels(mask.numpy())[0])


def test_batched_boxes_equal_the_per_sample_reference_on_random_scores():
    g = torch.Generator().manual_seed(3)
    scores = torch.rand(400, 14, 14, generator=g, dtype=torch.float64) ** torch.linspace(0.5, 8, 400)[:, None, None]
    for offset in ("released", "exact"):
        assert torch.equal(patch_boxes(scores, 1.2, 32, offset), patch_boxes_reference(scores, 1.2, 32, offset))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reference_boxes_accept_16_bit_scores(dtype):
    """Mixed-precision runs hand the eager path 16-bit scores; numpy has no bfloat16."""
    g = torch.Generator().manual_seed(4)
    scores = (torch.rand(20, 14, 14, generator=g) ** 4).to(dtype)
    assert torch.equal(patch_boxes(scores, 1.3, 16), patch_boxes_reference(scores, 1.3, 16))


# -------------------------------------------------------------------------------- rollout


def random_layers(n_tokens: int, depth: int, batch: int = 3, heads: int = 4, width: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    scale = torch.linspace(0.5, 3.0, batch, dtype=torch.float64)[:, None, None, None]  # mixed temperatures

    def qk():
        return torch.randn(batch, heads, n_tokens, width, generator=g, dtype=torch.float64) * scale

    return [LayerQK(q=qk(), k=qk(), scale=width**-0.5) for _ in range(depth)]


def original_dppm_scores(layers: list[LayerQK]) -> torch.Tensor:
    """RAMS-Trans model_rams.py:424-439 per sample: head mean, (A + I) row-normalised, J = A_L···A_1,
    mean over all rows. Explicit float64 matrices."""
    out = []
    for b in range(layers[0].q.shape[0]):
        joint = None
        for layer in layers:
            probs = torch.softmax(layer.q[b] @ layer.k[b].transpose(-1, -2) * layer.scale, dim=-1)
            aug = probs.mean(0) + torch.eye(probs.shape[-1], dtype=torch.float64)
            aug = aug / aug.sum(dim=-1, keepdim=True)
            joint = aug if joint is None else aug @ joint
        out.append(joint.mean(0))
    return torch.stack(out)


@pytest.mark.parametrize("chunk", [None, 1, 7])
def test_vector_rollout_scores_equal_the_full_matrix_products(chunk):
    layers = random_layers(n_tokens=2 + 25, depth=4)
    want = original_dppm_scores(layers)
    got = rollout_scores(layers, chunk=chunk)
    assert got.dtype == torch.float64
    assert (got - want).abs().max().item() < 1e-12
    assert (reference.residual_rollout_column_mean(layers) - want).abs().max().item() < 1e-12
    # §8.2/§8.4: the order of the product and head-averaging first both matter
    reversed_order = original_dppm_scores(layers[::-1])
    assert (reversed_order - want).abs().max().item() > 1e-4
    per_head = torch.stack([original_dppm_scores([LayerQK(q=l.q[:, h:h + 1], k=l.k[:, h:h + 1], scale=l.scale)
                                                  for l in layers]) for h in range(4)]).mean(0)
    assert (per_head - want).abs().max().item() > 1e-4


def test_rollout_scores_run_in_float32_from_half_inputs():
    layers = [LayerQK(q=l.q.to(torch.bfloat16), k=l.k.to(torch.bfloat16), scale=l.scale)
              for l in random_layers(n_tokens=10, depth=2)]
    assert rollout_scores(layers).dtype == torch.float32


# ---------------------------------------------------------------------------- crop and zoom


def test_crop_values_follow_align_corners():
    """§8.7: pixel value 1000*row + col, box (127, 255, 223, 383) zoomed to 448."""
    rows = torch.arange(448, dtype=torch.float64)
    image = (1000 * rows[:, None] + rows[None, :])[None, None]
    out = crop_zoom(image, torch.tensor([[127, 255, 223, 383]]), 448)[0, 0]
    assert [out[0, 0].item(), out[-1, -1].item(), out[-1, 0].item(), out[0, -1].item()] == pytest.approx(
        [127255, 223383, 223255, 127383], abs=1e-6)
    assert out[100, 0].item() == pytest.approx(1000 * 148.47651 + 255, abs=1e-2)
    assert out[100, 0].item() == pytest.approx(1000 * (127 + 100 * 96 / 447) + 255, abs=1e-6)


def random_boxes(batch: int, size: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(0, size, (batch, 2, 2), generator=g).sort(dim=1).values  # (start, end) per axis
    return torch.stack([a[:, 0, 0], a[:, 0, 1], a[:, 1, 0], a[:, 1, 1]], dim=1)


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 5e-4)])
def test_crop_zoom_equals_per_sample_slice_and_interpolate(dtype, tol):
    x = torch.randn(12, 3, 40, 40, generator=torch.Generator().manual_seed(5), dtype=dtype) * 2
    boxes = random_boxes(12, 40, seed=6)
    boxes[0] = torch.tensor([0, 0, 39, 39])  # whole image
    boxes[1] = torch.tensor([7, 9, 7, 30])  # a single row
    for size in (40, 24, 56):
        got, want = crop_zoom(x, boxes, size), crop_zoom_reference(x, boxes, size)
        assert got.shape == want.shape == (12, 3, size, size) and got.dtype == dtype
        assert (got - want).abs().max().item() < tol, size
    # and the reference is what the released code does: slice, then interpolate with align_corners
    t, l, b, r = boxes[2].tolist()
    alone = F.interpolate(x[2:3, :, t:b + 1, l:r + 1], size=(24, 24), mode="bilinear", align_corners=True)
    assert torch.equal(crop_zoom_reference(x, boxes, 24)[2:3], alone)


def test_crop_zoom_samples_16_bit_images_on_a_float32_grid():
    x = torch.randn(3, 3, 448, 448, generator=torch.Generator().manual_seed(7)).bfloat16()
    boxes = torch.tensor([[127, 255, 223, 383], [351, 351, 447, 447], [0, 0, 447, 447]])
    got = crop_zoom(x, boxes, 448)
    assert got.dtype == torch.bfloat16
    assert torch.equal(got, crop_zoom(x.float(), boxes, 448).bfloat16())
