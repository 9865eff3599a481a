"""Figures of `bench.py explain`: what one method computed on one test image, drawn with matplotlib.

The drawing code only draws: every index, score, mask and box comes from the method's explain hook
(`methods.explain`). `DRAWERS` maps the hook's ``kind`` to a function that fills a figure; pixel
coordinates come from `methods.explain.TokenGeometry` (token rectangles, overlapping patches
included) and `box_rect` (DPPM's inclusive boxes), which the tests hold to the model's own numbers.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from methods.explain import TokenGeometry

STYLE = {"font.size": 8, "font.family": "sans-serif", "axes.titlesize": 8}
PANEL_INCHES = 2.4
DPI = 100


@dataclass
class ExplainItem:
    """One image of one model: the network's view of it and what the hook returned for it."""

    method_label: str
    image: np.ndarray  # [H, W, 3] uint8, the centre crop the network saw (before normalisation)
    true: str
    pred: str
    sample: Mapping[str, np.ndarray]  # the hook's tensors for this image (batch axis removed)
    geometry: TokenGeometry
    class_names: Sequence[str] = ()
    images: Sequence[np.ndarray] = ()  # every image of the batch (Mix-ViT's partners)
    image_ids: Sequence[int] = ()  # their test-split indices, for the titles
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def correct(self) -> bool:
        return self.true == self.pred

    def name(self, index: int) -> str:
        return str(self.class_names[index]) if 0 <= index < len(self.class_names) else f"class {index}"


def token_rect(geometry: TokenGeometry, token: int) -> tuple[float, float, float, float]:
    """Matplotlib `Rectangle` (x, y, width, height) in `imshow` coordinates (pixel i spans i ± 0.5)
    of the pixels sequence position `token` sees."""
    top, left, bottom, right = geometry.token_rect(token)
    return left - 0.5, top - 0.5, right - left, bottom - top


def box_rect(box: Sequence[int]) -> tuple[float, float, float, float]:
    """(x, y, width, height) of an inclusive pixel box ``(top, left, bottom, right)`` (DPPM's)."""
    top, left, bottom, right = (int(v) for v in box)
    return left - 0.5, top - 0.5, right - left + 1, bottom - top + 1


def rect_box(x: float, y: float, width: float, height: float) -> tuple[int, int, int, int]:
    """Inverse of `box_rect`: the inclusive box a drawn rectangle outlines."""
    return round(y + 0.5), round(x + 0.5), round(y + height - 0.5), round(x + width - 0.5)


def grid_extent(geometry: TokenGeometry) -> tuple[float, float, float, float]:
    """`imshow` extent of a ``[Gh, Gw]`` map over the pixels its tokens cover."""
    height = (geometry.grid[0] - 1) * geometry.stride + geometry.patch
    width = (geometry.grid[1] - 1) * geometry.stride + geometry.patch
    return -0.5, width - 0.5, height - 0.5, -0.5


def _outline(ax, geometry: TokenGeometry, token: int, color, gid: str, width: float = 1.2, label: str | None = None):
    x, y, w, h = token_rect(geometry, token)
    ax.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor=color, linewidth=width, gid=gid, label=label))


def _image_axis(ax, image: np.ndarray, title: str):
    ax.imshow(image, interpolation="nearest")
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])


def _patch_tokens(geometry: TokenGeometry, tokens) -> list[int]:
    return [int(t) for t in np.asarray(tokens).ravel() if geometry.prefix <= int(t) < geometry.prefix + geometry.num_patches]


def draw_rollout(fig: Figure, item: ExplainItem) -> None:
    left, right = fig.subplots(1, 2)
    _image_axis(left, item.image, "input")
    _image_axis(right, item.image, "class-token attention rollout")
    right.imshow(item.sample["heat"], cmap="inferno", alpha=0.6, extent=grid_extent(item.geometry),
                 interpolation="nearest")


def draw_maws(fig: Figure, item: ExplainItem) -> None:
    left, right = fig.subplots(1, 2)
    _image_axis(left, item.image, "input")
    picks = item.sample["picks"]  # [layers, k]
    _image_axis(right, item.image, f"MAWS picks, {picks.shape[1]} per layer")
    colors = matplotlib.colormaps["viridis"](np.linspace(0, 1, max(2, len(picks))))
    for layer, tokens in enumerate(picks):
        kept = _patch_tokens(item.geometry, tokens)
        for i, token in enumerate(kept):
            _outline(right, item.geometry, token, colors[layer], f"maws-{layer}-{token}",
                     label=f"layer {layer}" + ("" if len(kept) == len(tokens) else " (+CLS)") if i == 0 else None)
    right.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=6, frameon=False)


def draw_parts(fig: Figure, item: ExplainItem) -> None:
    left, right = fig.subplots(1, 2)
    _image_axis(left, item.image, "input")
    parts = [int(t) for t in item.sample["parts"]]
    _image_axis(right, item.image, f"part token of each of {len(parts)} heads")
    colors = matplotlib.colormaps["tab20"](np.linspace(0, 1, max(2, len(parts))))
    heads: dict[int, list[int]] = {}
    for head, token in enumerate(parts):
        heads.setdefault(token, []).append(head)
    for token, hs in heads.items():
        _outline(right, item.geometry, token, colors[hs[0]], f"part-{token}", width=1.6)
        top, left_px, _, _ = item.geometry.token_rect(token)
        right.text(left_px, top, ",".join(f"h{h}" for h in hs), color="white", fontsize=5, va="bottom",
                   bbox={"facecolor": colors[hs[0]], "pad": 0.5, "linewidth": 0})


def draw_mixing(fig: Figure, item: ExplainItem) -> None:
    mine, partner, predictor = fig.subplots(1, 3)
    g = item.geometry
    written = _patch_tokens(g, item.sample["positions"])
    source = int(item.sample["sources"])
    _image_axis(mine, item.image, f"{len(written)} tokens overwritten")
    for token in written:
        _outline(mine, g, token, "red", f"substituted-{token}")
    where = f"test #{item.image_ids[source]}" if len(item.image_ids) > source else f"image {source}"
    _image_axis(partner, item.images[source], f"from partner ({where})")
    for token in _patch_tokens(g, item.sample["source_positions"]):
        _outline(partner, g, token, "cyan", f"source-{token}")
    shown = predictor.imshow(item.sample["predicted"], cmap="magma", vmin=0.0, vmax=1.0, extent=grid_extent(g),
                             interpolation="nearest")
    predictor.set_title("substitution predictor")
    predictor.set_xticks([])
    predictor.set_yticks([])
    for token in written:
        _outline(predictor, g, token, "cyan", f"predicted-{token}", width=0.6)
    fig.colorbar(shown, ax=predictor, fraction=0.046, pad=0.02)


def _top3(item: ExplainItem, logits: np.ndarray) -> str:
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    order = np.argsort(-probs, kind="stable")[:3]
    return "\n".join(f"{item.name(int(i))}: {100 * probs[i]:.1f}%" for i in order)


def draw_dppm(fig: Figure, item: ExplainItem) -> None:
    scores_ax, mask_ax, zoom_ax, text_ax = fig.subplots(1, 4)
    g = item.geometry
    _image_axis(scores_ax, item.image, "rollout patch scores")
    scores_ax.imshow(item.sample["scores"], cmap="inferno", alpha=0.6, extent=grid_extent(g), interpolation="nearest")
    mask = np.asarray(item.sample["mask"], dtype=float)
    _image_axis(mask_ax, item.image, "DPPM mask and box" if mask.any() else "DPPM mask empty: whole-image box")
    mask_ax.imshow(np.ma.masked_equal(mask, 0.0), cmap="cool", alpha=0.45, extent=grid_extent(g), vmin=0, vmax=1,
                   interpolation="nearest")
    x, y, w, h = box_rect(item.sample["boxes"])
    mask_ax.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor="yellow", linewidth=1.8, gid="dppm-box"))
    _image_axis(zoom_ax, item.extras["zoomed"], "zoomed crop (pass 2)")
    text_ax.axis("off")
    text_ax.text(0.0, 1.0, "global (pass 1) top-3\n" + _top3(item, item.sample["global"])
                 + "\n\nlocal (pass 2) top-3\n" + _top3(item, item.sample["local"]),
                 va="top", ha="left", family="monospace", fontsize=6.5, transform=text_ax.transAxes)


Drawer = Callable[[Figure, ExplainItem], None]
DRAWERS: dict[str, Drawer] = {"rollout": draw_rollout, "maws": draw_maws, "parts": draw_parts,
                              "mixing": draw_mixing, "dppm": draw_dppm}
PANELS = {"rollout": 2, "maws": 2.6, "parts": 2, "mixing": 3.3, "dppm": 4}


def explain_figure(kind: str, item: ExplainItem) -> Figure:
    """The figure of one image, titled with the method, the true class and the prediction."""
    if kind not in DRAWERS:
        raise ValueError(f"no drawer for explain kind {kind!r}; known: {', '.join(DRAWERS)}")
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(PANEL_INCHES * PANELS.get(kind, 2), PANEL_INCHES + 0.5), layout="constrained", dpi=DPI)
        DRAWERS[kind](fig, item)
        verdict = "correct" if item.correct else "wrong"
        fig.suptitle(f"{item.method_label}: true {item.true} | predicted {item.pred} ({verdict})",
                     color="#1a6e1a" if item.correct else "#a40000")
    return fig


def png_bytes(fig: Figure) -> bytes:
    """The figure as PNG without a timestamp or software tag (same inputs, same bytes)."""
    with matplotlib.rc_context(STYLE):
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()
