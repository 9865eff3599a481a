"""Float64 runs stay float64 end to end: logits, loss and every gradient of every registered method
and variant (the fidelity tests compare against float64 transcriptions, so a silent down-cast to
float32 anywhere would hide behind their tolerances)."""

from __future__ import annotations

import pytest
import torch

from bench.presets import PRESETS
from bench.recipe import Recipe
from methods import get_method, method_names
from methods.backbone import BackboneConfig

pytestmark = pytest.mark.usefixtures("single_thread")

IMG = 64  # a multiple of 16 (So-ViT-N's stem) and of 32 (ramstrans:b32 needs a 2 x 2 grid)
CLASSES = 3
TINY_OPTIONS = {"transfg": {"slide_step": 6}}  # the README's setting for patch 8

SPECS = [(name, None) for name in method_names()] + [
    (name, variant) for name in method_names() for variant in get_method(name).variants]


@pytest.mark.parametrize("name, variant", SPECS, ids=[f"{n}:{v}" if v else n for n, v in SPECS])
def test_float64_forward_and_backward_stay_float64(name, variant):
    torch.manual_seed(0)
    adapter = get_method(name)
    options = adapter.resolve_options(variant, TINY_OPTIONS.get(name))
    backbone = adapter.configure_backbone(BackboneConfig(img_size=IMG, **PRESETS["tiny"].backbone), options)
    adapter.check_backbone(backbone)
    model = adapter.create(CLASSES, backbone, options, Recipe(img_size=IMG)).double().train()
    images = torch.randn(2, 3, IMG, IMG, dtype=torch.float64)
    out = model(images, torch.tensor([0, 1]))
    assert out["logits"].dtype == torch.float64
    for key, value in {"loss": out["loss"], **out["losses"], **out.get("views", {})}.items():
        assert value.dtype == torch.float64, key
    out["loss"].backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert grads, "no parameter received a gradient"
    assert {n: g.dtype for n, g in grads.items() if g.dtype != torch.float64} == {}
