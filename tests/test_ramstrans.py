"""RAMS-Trans model and adapter: token read-out, initialisation, gradients, views, modes, recipe, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bench.errors import UsageError
from bench.matrix import MatrixSpec, build_cells
from bench.recipe import Recipe
from cuda_sync import assert_second_step_does_not_sync, needs_cuda
from google_layout import vit_arrays, write_npz
from methods import get_method, parse_method_spec
from methods.attention import set_attention_mode
from methods.backbone import BackboneConfig
from methods.pretrained import PretrainedFile
from methods.ramstrans import crop_zoom

pytestmark = pytest.mark.usefixtures("single_thread")

TINY = BackboneConfig(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, drop_rate=0.0)
CLASSES = 5


def build(variant: str | None = None, backbone: BackboneConfig = TINY, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    adapter = get_method("ramstrans")
    options = adapter.resolve_options(variant, overrides)
    return adapter.create(CLASSES, adapter.configure_backbone(backbone, options), options, Recipe())


def peaky(model):
    """Sharpen the random attention (timm's init is near uniform: every mask would be empty) and make
    the two class tokens distinct, so boxes and read-outs are non-trivial."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for block in model.vit.blocks:
            block.attn.qkv.weight.mul_(40)
        model.vit.reg_token.copy_(torch.randn(model.vit.reg_token.shape, generator=g))
    return model


def images(batch: int = 6, size: int = 32, seed: int = 2, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_second_class_token_is_a_copy_and_the_final_norm_starts_at_identity():
    vit = build().vit
    assert vit.num_prefix_tokens == 2
    assert torch.equal(vit.reg_token, vit.cls_token)
    assert torch.equal(vit.pos_embed[:, 1], vit.pos_embed[:, 0])
    assert not torch.equal(vit.pos_embed[:, 2], vit.pos_embed[:, 0])
    assert torch.equal(vit.norm.weight, torch.ones(32)) and torch.equal(vit.norm.bias, torch.zeros(32))
    assert vit.head.weight.abs().sum() > 0  # released: PyTorch's Linear init, not the zero head
    assert build(head_init="zero").vit.head.weight.abs().sum() == 0


def test_pretrained_final_norm_is_not_loaded_unless_asked(tmp_path):
    arrays = vit_arrays(np.random.default_rng(0), patch=8, dim=32, depth=2, heads=2, grid=4)
    path = write_npz(tmp_path / "tiny.npz", arrays)
    backbone = BackboneConfig(**{**TINY.__dict__, "pretrained": PretrainedFile.from_path(path)})
    released = build(backbone=backbone).vit
    cls = torch.from_numpy(arrays["cls"])
    assert torch.equal(released.cls_token, cls) and torch.equal(released.reg_token, cls)
    assert torch.equal(released.pos_embed[:, 1], released.pos_embed[:, 0])
    assert torch.equal(released.norm.weight, torch.ones(32)) and torch.equal(released.norm.bias, torch.zeros(32))
    report = released.pretrained_report
    assert "norm.weight" in report.initialised and "norm.weight" not in report.loaded and "norm" in report.adapted
    loaded = build(backbone=backbone, load_final_norm=True).vit
    assert torch.equal(loaded.norm.weight, torch.from_numpy(arrays["Transformer/encoder_norm/scale"]))


def test_global_reads_token_0_and_local_reads_token_1_of_the_zoomed_pass_through_one_head():
    model = peaky(build()).eval()
    x = images()
    with torch.no_grad():
        out = model.scales(x)
        vit = model.vit
        assert not torch.equal(out["boxes"], torch.tensor([[0, 0, 31, 31]] * 6))  # real proposals
        zoomed = crop_zoom(x, out["boxes"], 32)
        assert torch.equal(out["zoomed"], zoomed)
        assert torch.allclose(out["global"], vit.head(vit.forward_features(x)[:, 0]), atol=1e-6)
        local_tokens = vit.forward_features(zoomed)
        assert torch.allclose(out["local"], vit.head(local_tokens[:, 1]), atol=1e-6)
        assert not torch.allclose(out["local"], vit.head(local_tokens[:, 0]), atol=1e-3)
        vit.head.weight.add_(1.0)  # one classifier for both scales
        again = model.scales(x)
    assert not torch.allclose(again["global"], out["global"]) and not torch.allclose(again["local"], out["local"])


def test_eager_mode_is_the_reference_path_with_the_same_results(monkeypatch):
    import methods.ramstrans as rams

    calls = []
    for name in ("patch_boxes", "patch_boxes_reference", "crop_zoom", "crop_zoom_reference"):
        def spy(*args, _name=name, _fn=getattr(rams, name)):
            calls.append(_name)
            return _fn(*args)
        monkeypatch.setattr(rams, name, spy)
    fused = peaky(build()).double().eval()
    x = images(8, dtype=torch.float64)
    with torch.no_grad():
        a = fused.scales(x)
        assert calls == ["patch_boxes", "crop_zoom"]
        assert set_attention_mode(fused, "eager") == 2
        b = fused.scales(x)
        assert calls[2:] == ["patch_boxes_reference", "crop_zoom_reference"]
    assert torch.equal(a["boxes"], b["boxes"])
    assert len({tuple(box) for box in a["boxes"].tolist()}) > 1
    for key in ("global", "local", "zoomed"):
        assert (a[key] - b[key]).abs().max().item() < 1e-9, key
    assert build("eager").vit.blocks[0].attn.fused_attn is False


def test_released_loss_ignores_pass_2_and_the_paper_loss_adds_it():
    x, y = images(), torch.arange(6) % CLASSES

    def grads(model, loss):
        model.zero_grad()
        loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    released = peaky(build())
    out = released(x, y)
    assert set(out["losses"]) == {"ce"}
    assert released.scales(x.clone().requires_grad_())["zoomed"].requires_grad is False  # detached crop
    assert not out["views"]["local"].requires_grad  # pass 2 under no_grad
    with_pass_2 = grads(released, out["loss"])
    alone = grads(released, F.cross_entropy(released.vit.head(released.vit.forward_features(x)[:, 0]), y))
    assert {"vit.cls_token", "vit.reg_token", "vit.head.weight"} <= set(with_pass_2)
    assert with_pass_2["vit.reg_token"].abs().sum() > 0  # through attention in pass 1
    assert with_pass_2.keys() == alone.keys()
    assert all(torch.allclose(with_pass_2[n], alone[n], atol=1e-7) for n in alone)

    paper = peaky(build("paper"))
    out = paper(x, y)
    assert set(out["losses"]) == {"ce", "ce_local"}
    assert torch.allclose(out["loss"], out["losses"]["ce"] + out["losses"]["ce_local"])
    both = grads(paper, out["loss"])
    alone = grads(paper, F.cross_entropy(paper.vit.head(paper.vit.forward_features(x)[:, 0]), y))
    assert not torch.allclose(both["vit.reg_token"], alone["vit.reg_token"])


@pytest.mark.parametrize("headline", ["global", "local", "sum"])
def test_eval_returns_three_views_picks_the_headline_and_draws_no_random_numbers(headline):
    model = peaky(build(eval_logits=headline)).eval()
    x = images()
    state = torch.get_rng_state()
    with torch.no_grad():
        out = model(x)
    assert torch.equal(torch.get_rng_state(), state)
    views = out["views"]
    assert set(views) == {"global", "local", "sum"}
    assert torch.allclose(views["sum"], views["global"] + views["local"])
    assert torch.equal(out["logits"], views[headline])
    assert "loss" not in out


def test_options_variants_and_backbone_checks():
    adapter = get_method("ramstrans")
    assert adapter.resolve_options("paper")["local_weight"] == 1.0
    assert adapter.configure_backbone(TINY, adapter.resolve_options("b32")).patch_size == 32
    base = BackboneConfig(img_size=448, patch_size=16)
    assert adapter.configure_backbone(base, adapter.resolve_options(None)).grid_size == 28  # paper: ViT-B/16
    assert adapter.configure_backbone(base, adapter.resolve_options("b32")).grid_size == 14  # released
    for bad in ({"eval_logits": "best"}, {"box_offset": "none"}, {"alpha": 0.0}, {"local_weight": -1.0},
                {"head_init": "normal"}, {"patch_size": -8}):
        with pytest.raises(UsageError, match="bad options for ramstrans"):
            adapter.resolve_options(None, bad)
    with pytest.raises(UsageError, match="at least 2x2"):
        adapter.check_backbone(adapter.configure_backbone(TINY, adapter.resolve_options("b32")))  # 32 px / 32
    with pytest.raises(UsageError, match="not a multiple of the patch size 32"):
        adapter.configure_backbone(BackboneConfig(img_size=72, patch_size=8), adapter.resolve_options("b32"))


def test_cub_recipe_is_the_released_one():
    cell = build_cells(MatrixSpec([parse_method_spec("ramstrans:b32")], ["cub"], [0], "base"))[0]
    r = cell.recipe
    assert (r.img_size, r.resize_size, r.batch_size, r.optimizer, r.lr, r.momentum, r.weight_decay) == \
        (448, 600, 16, "sgd", 0.03, 0.9, 0.0)
    assert (r.warmup_steps, r.schedule, r.steps, r.clip_grad, r.color_jitter, r.lr_step_offset) == \
        (500, "cosine", 10000, 1.0, 0.0, 0)
    assert cell.recipe_sources["lr"].endswith("recipes.ramstrans")
    assert (cell.backbone.patch_size, cell.backbone.grid_size, cell.backbone.extra_tokens) == (32, 14, 1)
    assert cell.precision == "no"


def test_trains_and_records_global_local_and_sum_beside_the_eager_path(fast_run_args, tmp_path, capsys):
    from bench.cli import main

    small = ["--batch-size", "8", "--img-size", "32", "--resize-size", "36", "--eval-every", "4"]
    status = main(["--methods", "ramstrans,ramstrans:eager", *fast_run_args, *small])
    assert status == 0, capsys.readouterr().err[-2000:]
    records = [json.loads(p.read_text()) for p in Path(tmp_path / "results" / "runs").rglob("*.json")]
    assert sorted((r["method"], r["variant"] or "") for r in records) == [("ramstrans", ""), ("ramstrans", "eager")]
    for record in records:
        assert record["status"] == "ok", record.get("error")
        views = record["accuracy"]["views_last"]
        assert set(views) == {"global", "local", "sum"}
        assert views["global"]["top1"] == record["accuracy"]["top1_last"]  # released headline
        assert record["backbone"]["extra_tokens"] == 1
    assert {r["options"]["attention"] for r in records} == {"fused", "eager"}


def test_bad_option_is_one_line_and_exit_2(fast_run_args, capsys):
    from bench.cli import main

    assert main(["--methods", "ramstrans", "--opt", "eval_logits=best", *fast_run_args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "eval_logits must be one of global, local, sum" in lines[0], lines


@needs_cuda
@pytest.mark.parametrize("variant", [None, "paper"])
def test_training_forward_does_not_sync_host_and_device(variant):
    """The fused DPPM (rollout, labelling with its convergence check, boxes) and the crop stay on
    the device: no pageable copy, no `.item()`, no stream synchronisation in a training forward."""
    model = peaky(build(variant)).cuda().train()
    x, y = images().cuda(), torch.arange(6, device="cuda") % CLASSES
    assert_second_step_does_not_sync(lambda: model(x, y))
