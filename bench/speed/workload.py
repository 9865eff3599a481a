"""What one speed case builds: a method's model at a size and batch, with its recipe and optimizer groups.

Under `--with-data` the configuration is a cell's of `bench.py run` (`bench.matrix.build_cells`:
method, dataset card, preset, the card's preset block, then the command line; options with the
dataset's), so the loader and the synthetic inputs share it. Without a dataset the same layers
apply minus the card's. Weights are never loaded: speed does not depend on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import nn

from bench.matrix import scoped_options
from bench.recipe import Recipe, resolve_recipe
from methods.backbone import BackboneConfig

# The papers' settings on ViT-B/16: 384 px (FFVT's UFG sets) and 448 px (CUB, Mix-ViT), batch 8
# (FFVT, ViT) and 16 (Mix-ViT, TransFG, RAMS-Trans) per device; the `base*` presets' default axes.
PAPER_IMG_SIZES = (384, 448)
PAPER_BATCH_SIZES = (8, 16)


@dataclass
class Workload:
    """Everything a case needs to build and train one model; `build` gives a fresh CPU model."""

    label: str  # method name, or name:variant
    attention: str
    recipe: Recipe
    num_classes: int
    build: Callable[[], nn.Module]
    param_groups: Callable[[nn.Module], Iterable[dict[str, Any]]]
    build_fused: Callable[[], nn.Module]  # the fast-path model: model FLOPs are counted on it in both modes


def default_axes(preset, with_data: bool) -> tuple[list[int | None], list[int | None]]:
    """Image sizes and batches when none are given: the recipe's own under `--with-data` (a run's
    configuration), the preset's when it fixes them (`tiny`), else the papers' settings."""
    if with_data:
        return [None], [None]
    sizes = [preset.recipe["img_size"]] if "img_size" in preset.recipe else list(PAPER_IMG_SIZES)
    batches = [preset.recipe["batch_size"]] if "batch_size" in preset.recipe else list(PAPER_BATCH_SIZES)
    return sizes, batches


def method_workload(adapter, variant: str | None, attention: str, preset, card, img_size: int | None,
                    batch_size: int | None, num_classes: int, option_overrides: Mapping[str, Any],
                    extra_recipe: Mapping[str, Any] | None = None) -> Workload:
    """The workload of `adapter[:variant]` in `attention` mode; `card` is None for synthetic-only runs."""
    cli = {"img_size": img_size, "batch_size": batch_size, **(extra_recipe or {})}
    if card is not None:  # exactly the configuration `bench.py run` gives a cell of this dataset
        from bench.matrix import MatrixSpec, build_cells

        spec = MatrixSpec([(adapter, variant)], [card.name], [0], preset.name, recipe_overrides=cli,
                          option_overrides={**option_overrides, f"{adapter.name}.attention": attention})
        [cell] = build_cells(spec)
        recipe, backbone, options = cell.recipe, cell.backbone, cell.options
    else:
        options = adapter.resolve_options(variant, {**scoped_options(adapter, option_overrides), "attention": attention})
        layers = [(f"method {adapter.name}", adapter.recipe), (f"preset {preset.name}", preset.recipe)]
        if img_size is not None:  # no loader: the resize size is unused, only keep it valid
            below = [layer["resize_size"] for _, layer in layers if layer and layer.get("resize_size")]
            cli.setdefault("resize_size", max(img_size, below[-1] if below else Recipe.resize_size))
        recipe, _ = resolve_recipe([*layers, ("command line", cli)])
        backbone = adapter.configure_backbone(BackboneConfig(img_size=recipe.img_size, **preset.backbone), options)
        adapter.check_backbone(backbone)

    def builder(mode: str) -> Callable[[], nn.Module]:
        def build() -> nn.Module:
            torch.manual_seed(0)  # the same weights in every mode
            return adapter.create(num_classes, backbone, {**options, "attention": mode}, recipe)
        return build

    label = f"{adapter.name}:{variant}" if variant else adapter.name
    return Workload(label, attention, recipe, num_classes, builder(attention),
                    lambda model: adapter.param_groups(model, recipe), builder("fused"))
