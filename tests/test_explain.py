"""The explain hooks and their figures: token indices land on the right pixels, drawn boxes are the
boxes DPPM computed, and every method's hook reports the model's own predictions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.patches import Rectangle

from bench.recipe import Recipe
from bench.report.explain_plots import ExplainItem, explain_figure, png_bytes, rect_box, token_rect
from methods import get_method
from methods.backbone import BackboneConfig, build_vit
from methods.dppm import patch_boxes
from methods.explain import TokenGeometry, class_token_rollout, explain

TINY = dict(patch_size=8, embed_dim=32, depth=3, num_heads=4, drop_rate=0.0)


@pytest.mark.parametrize("img_size, patch, stride, extra", [(384, 16, 0, 0), (448, 16, 0, 0), (448, 16, 12, 0),
                                                           (384, 16, 12, 0), (448, 32, 0, 1), (64, 8, 0, 0)])
def test_token_rectangle_is_the_patch_embedding_receptive_field(img_size, patch, stride, extra):
    """A token's rectangle is exactly where the patch convolution reads its pixels (gradient support),
    for the papers' 384/448 grids, TransFG's overlapping patches and RAMS-Trans' second class token."""
    cfg = BackboneConfig(img_size=img_size, patch_size=patch, embed_dim=8, depth=1, num_heads=1, patch_stride=stride,
                         extra_tokens=extra)
    vit = build_vit(cfg, num_classes=2)
    geometry = TokenGeometry.of(vit)
    assert geometry.grid == (cfg.grid_size, cfg.grid_size) and geometry.prefix == 1 + extra
    assert geometry.stride == (stride or patch) and geometry.patch == patch
    last = cfg.num_patches - 1
    for index in (0, 1, cfg.grid_size, cfg.grid_size + 2, last):
        image = torch.zeros(1, 3, img_size, img_size, requires_grad=True)
        vit.patch_embed(image)[0, index].square().sum().backward()
        rows = torch.nonzero(image.grad.abs().sum(dim=(0, 1, 3))).ravel()
        cols = torch.nonzero(image.grad.abs().sum(dim=(0, 1, 2))).ravel()
        top, left, bottom, right = geometry.token_rect(geometry.prefix + index)
        assert (top, left, bottom, right) == (rows.min(), cols.min(), rows.max() + 1, cols.max() + 1)
        x, y, w, h = token_rect(geometry, geometry.prefix + index)
        assert (x + 0.5, y + 0.5, x + w - 0.5, y + h - 0.5) == (left, top, right - 1, bottom - 1)
    assert geometry.token_rect(geometry.prefix + last)[2] <= img_size
    with pytest.raises(ValueError, match="not a patch token"):
        geometry.token_rect(geometry.prefix - 1)
    if stride:  # neighbouring tokens share pixels
        assert geometry.token_rect(geometry.prefix)[3] > geometry.token_rect(geometry.prefix + 1)[1]


def tiny_model(method: str, img_size: int = 64, variant: str | None = None, seed: int = 0, **options):
    torch.manual_seed(seed)
    adapter = get_method(method)
    opts = adapter.resolve_options(variant, options)
    recipe = Recipe(img_size=img_size, resize_size=img_size)
    backbone = adapter.configure_backbone(BackboneConfig(img_size=img_size, **TINY), opts)
    return adapter.create(6, backbone, opts, recipe).eval()


def images(count: int = 3, size: int = 64) -> torch.Tensor:
    return torch.randn(count, 3, size, size, generator=torch.Generator().manual_seed(1))


def sample_of(result: dict, b: int) -> dict:
    n = result["logits"].shape[0]
    return {k: (v.float() if v.is_floating_point() else v)[b].numpy() for k, v in result.items()
            if isinstance(v, torch.Tensor) and v.shape[:1] == (n,)}


def item_for(method: str, result: dict, b: int, x: torch.Tensor, extras=None) -> ExplainItem:
    shown = [np.zeros((x.shape[-2], x.shape[-1], 3), dtype=np.uint8) for _ in range(len(x))]
    pred = int(result["logits"][b].argmax())
    return ExplainItem(method, shown[b], "class 1", f"class {pred}", sample_of(result, b), result["geometry"],
                       [], shown, image_ids=[100 + i for i in range(len(x))], extras=extras or {})


def outlines(fig, prefix: str) -> list[Rectangle]:
    return [a for ax in fig.axes for a in ax.patches if (a.get_gid() or "").startswith(prefix)]


@pytest.mark.parametrize("method, variant, kind", [("vit", None, "rollout"), ("sovit", None, "rollout"),
                                                   ("ffvt", None, "maws"), ("transfg", "overlap", "parts"),
                                                   ("mixvit", None, "mixing"), ("ramstrans", None, "dppm")])
def test_every_hook_reports_the_models_own_predictions_and_draws(method, variant, kind, single_thread):
    model = tiny_model(method, variant=variant, **({"slide_step": 6} if method == "transfg" else {}))
    x = images()
    with torch.no_grad():
        expected = model(x)["logits"]
    result = explain(model, x)
    assert result["kind"] == kind and not model.training
    torch.testing.assert_close(result["logits"], expected)
    fig = explain_figure(kind, item_for(method, result, 1, x, {"zoomed": np.zeros((64, 64, 3), np.uint8)}))
    assert fig._suptitle.get_text().startswith(f"{method}: true class 1 | predicted class ")
    assert png_bytes(fig)[:8] == b"\x89PNG\r\n\x1a\n"


def test_drawn_tokens_are_the_hooks_tokens(single_thread):
    x = images()
    transfg = tiny_model("transfg", variant="overlap", slide_step=6)
    result = explain(transfg, x)
    assert result["geometry"].stride == 6 and result["geometry"].grid == (10, 10)  # patch 8, slide step 6 at 64 px
    torch.testing.assert_close(result["parts"], transfg.parts(x)[1])
    fig = explain_figure("parts", item_for("transfg", result, 0, x))
    drawn = {int(r.get_gid().split("-")[1]): (r.get_x(), r.get_y(), r.get_width(), r.get_height())
             for r in outlines(fig, "part-")}
    assert set(drawn) == set(result["parts"][0].tolist())
    assert all(box == token_rect(result["geometry"], token) for token, box in drawn.items())

    ffvt = tiny_model("ffvt")
    result = explain(ffvt, x)
    picks = torch.stack(ffvt.fuse(x).picks, dim=1)
    torch.testing.assert_close(result["picks"], picks)
    fig = explain_figure("maws", item_for("ffvt", result, 2, x))
    for layer in range(picks.shape[1]):
        drawn = {int(r.get_gid().split("-")[2]) for r in outlines(fig, f"maws-{layer}-")}
        assert drawn == {t for t in picks[2, layer].tolist() if t >= 1}  # the class token has no pixels

    mixvit = tiny_model("mixvit")
    result = explain(mixvit, x)
    assert result["sources"].tolist() == [1, 2, 1]  # partners j -> j+1, chained in place (released code)
    assert torch.equal(result["positions"], result["selected"])  # index_shift: patch p written at position p
    fig = explain_figure("mixing", item_for("mixvit", result, 2, x))
    assert {int(r.get_gid().split("-")[1]) for r in outlines(fig, "substituted-")} == \
        {t for t in result["positions"][2].tolist() if t >= 1}
    assert {int(r.get_gid().split("-")[1]) for r in outlines(fig, "source-")} == \
        {t for t in result["positions"][1].tolist() if t >= 1}  # image 2 got image 1's tokens
    assert fig.axes[1].get_title() == "from partner (test #101)"


def test_drawn_box_is_the_box_dppm_computed(single_thread):
    model = tiny_model("ramstrans", seed=3, alpha=1.02)
    with torch.no_grad():  # sharpen the random attention so the proposals are real boxes, not the whole image
        for block in model.vit.blocks:
            block.attn.qkv.weight.mul_(6.0)
    x = images(4)
    result = explain(model, x)
    with torch.no_grad():
        scales = model.scales(x, local_grad=False)
    assert torch.equal(result["boxes"], scales["boxes"])
    assert torch.equal(result["boxes"], patch_boxes(result["scores"], model.alpha, model.patch, model.box_offset))
    whole = torch.tensor([0, 0, 63, 63])
    proper = [b for b in range(4) if not torch.equal(result["boxes"][b], whole)]
    assert proper == [0, 1, 2, 3], "a whole-image proposal cannot show a misdrawn box"
    for b in range(4):
        fig = explain_figure("dppm", item_for("ramstrans", result, b, x, {"zoomed": np.zeros((64, 64, 3), np.uint8)}))
        (box,) = outlines(fig, "dppm-box")
        assert rect_box(box.get_x(), box.get_y(), box.get_width(), box.get_height()) == \
            tuple(result["boxes"][b].tolist())
    torch.testing.assert_close(result["zoomed"], scales["zoomed"])


def test_rollout_matches_the_full_matrix_product(single_thread):
    """The default hook's rollout against Abnar & Zuidema's definition with explicit maps."""
    model = tiny_model("vit")
    x = images(2)
    result = explain(model, x)
    from methods.attention import AttentionCapture, set_attention_mode

    set_attention_mode(model, "eager")
    with AttentionCapture(model.vit.blocks) as capture, torch.no_grad():
        model(x)
    n = capture.layers[0].probs.shape[-1]
    product = torch.eye(n).expand(2, n, n)
    for layer in capture.layers:
        product = (0.5 * layer.probs.mean(dim=1) + 0.5 * torch.eye(n)) @ product
    torch.testing.assert_close(result["heat"].flatten(1), product[:, 0, 1:], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(class_token_rollout(capture.layers), product[:, 0], atol=1e-6, rtol=1e-5)
