"""The benchmark matrix: methods x datasets x seeds expanded into cells with stable ids.

A cell's id is a hash of its canonical configuration: everything that changes what the run
learns or measures (method, variant and options, dataset, seed, preset, backbone with the
pretrained weights by sha256, resolved recipe, precision, strategy, world size) and nothing that
does not (results folder, data folder, where the weights file lies, loader workers, progress
bars). The same configuration gives the same id in any process, in any order.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from bench import records
from bench.errors import UsageError
from bench.recipe import Recipe, resolve_recipe
from methods.backbone import BackboneConfig
from methods.pretrained import PretrainedFile


def canonical_hash(payload: Mapping[str, Any], length: int = 16) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


@dataclass
class Cell:
    method: str
    variant: str | None
    dataset: str
    seed: int
    preset: str
    precision: str
    strategy: str
    world_size: int
    recipe: Recipe
    backbone: BackboneConfig
    options: dict[str, Any] = field(default_factory=dict)
    recipe_sources: dict[str, str] = field(default_factory=dict, compare=False)
    strategy_config: dict[str, Any] = field(default_factory=dict)  # a user's DeepSpeed JSON

    @property
    def method_label(self) -> str:
        return f"{self.method}:{self.variant}" if self.variant else self.method

    def identity(self, with_seed: bool = True) -> dict[str, Any]:
        ident = {
            "method": self.method,
            "variant": self.variant,
            "options": self.options,
            "dataset": self.dataset,
            "preset": self.preset,
            "backbone": self.backbone.identity(),
            "recipe": self.recipe.to_dict(),
            "precision": self.precision,
            "strategy": self.strategy,
            "world_size": self.world_size,
        }
        if self.strategy_config:
            ident["strategy_config"] = self.strategy_config
        if with_seed:
            ident["seed"] = self.seed
        return ident

    @property
    def cell_id(self) -> str:
        return canonical_hash(self.identity())

    @property
    def setting_id(self) -> str:
        """Same as cell_id but without the seed: the cells that form one leaderboard row."""
        return canonical_hash(self.identity(with_seed=False))

    def record_path(self, results_dir: Path) -> Path:
        return records.record_path(results_dir, self.dataset, self.method_label, self.seed, self.cell_id)

    def describe(self) -> str:
        return f"{self.method_label} on {self.dataset} seed {self.seed}"


def parse_seeds(spec: str) -> list[int]:
    """`0,1,2` or a range `0-4` (inclusive), or a mix."""
    seeds: list[int] = []
    for part in (p.strip() for p in str(spec).split(",")):
        if not part:
            continue
        try:
            if "-" in part:
                lo, hi = part.split("-", 1)
                seeds.extend(range(int(lo), int(hi) + 1))
            else:
                seeds.append(int(part))
        except ValueError:
            raise UsageError(f"--seeds expects integers like 0,1,2 or 0-4, got {spec!r}") from None
    if not seeds:
        raise UsageError("--seeds is empty; give integers like 0,1,2")
    if any(s < 0 for s in seeds):
        raise UsageError(f"--seeds must be non-negative, got {spec!r}")
    return list(dict.fromkeys(seeds))


@dataclass
class MatrixSpec:
    """What the user asked for; `build_cells` expands it into resolved cells."""

    methods: list[tuple[Any, str | None]]
    datasets: list[str]
    seeds: list[int]
    preset: str = "tiny"
    precision: str = "no"
    strategies: list[str] = field(default_factory=lambda: ["ddp"])
    world_sizes: list[int] = field(default_factory=lambda: [1])
    recipe_overrides: Mapping[str, Any] = field(default_factory=dict)
    option_overrides: Mapping[str, Any] = field(default_factory=dict)
    strategy_config: Mapping[str, Any] = field(default_factory=dict)
    pretrained: PretrainedFile | None = None
    pos_embed_resize: str = "bilinear"


def build_cells(spec: MatrixSpec) -> list[Cell]:
    """Expand the matrix (method, dataset, strategy, world size, seed; in that nesting) with resolved configs."""
    from bench.data import get_card
    from bench.presets import get_preset

    preset = get_preset(spec.preset)
    cells: list[Cell] = []
    for adapter, variant in spec.methods:
        overrides = scoped_options(adapter, spec.option_overrides)
        for dataset in spec.datasets:
            card = get_card(dataset)
            options = adapter.resolve_options(variant, overrides, dataset=card.name)
            recipe, sources = resolve_recipe(
                [
                    (f"method {adapter.name}", adapter.recipe),
                    *card.recipe_layers(adapter.recipe_family),
                    (f"preset {preset.name}", preset.recipe),
                    card.preset_layer(preset.name),
                    ("command line", spec.recipe_overrides),
                ]
            )
            backbone = BackboneConfig(img_size=recipe.img_size, **preset.backbone, pretrained=spec.pretrained,
                                      pos_embed_resize=spec.pos_embed_resize)
            backbone = adapter.configure_backbone(backbone, options)
            adapter.check_backbone(backbone)
            for strategy in spec.strategies:
                for world_size in spec.world_sizes:
                    for seed in spec.seeds:
                        cells.append(Cell(adapter.name, variant, card.name, seed, preset.name, spec.precision,
                                          strategy, world_size, recipe, backbone, options, sources,
                                          dict(spec.strategy_config)))
    return cells


def select_shard(cells: list[Cell], index: int, count: int) -> list[Cell]:
    """Shard `index` of `count`: every count-th cell in cell-id order, so the shards of one matrix are
    disjoint, cover it, differ in size by at most one, and do not depend on the order of the flags."""
    ids = sorted({c.cell_id for c in cells})
    mine = set(ids[index::count])
    return [c for c in cells if c.cell_id in mine]


def parse_shard(spec: str) -> tuple[int, int]:
    """`i/n` with 0 <= i < n."""
    try:
        index, count = (int(x) for x in spec.split("/"))
    except ValueError:
        raise UsageError(f"--shard expects i/n (e.g. 0/4), got {spec!r}") from None
    if count < 1 or not 0 <= index < count:
        raise UsageError(f"--shard {spec}: need 0 <= i < n")
    return index, count


def parse_world_sizes(spec: str) -> list[int]:
    try:
        sizes = [int(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"--world-sizes expects integers like 1,2,4, got {spec!r}") from None
    if not sizes or any(s < 1 for s in sizes):
        raise UsageError(f"--world-sizes expects positive integers like 1,2,4, got {spec!r}")
    return list(dict.fromkeys(sizes))


def scoped_options(adapter, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """`--opt key=value` applies to every method that has `key`; `--opt method.key=value` to one."""
    mine: dict[str, Any] = {}
    for key, value in overrides.items():
        scope, dot, name = key.rpartition(".")
        if dot and scope == adapter.name:
            mine[name] = value
        elif not dot and key in adapter.options:
            mine[key] = value
    return mine


def check_option_overrides(method_specs, overrides: Mapping[str, Any]) -> None:
    """Every `--opt` must apply to at least one selected method."""
    for key in overrides:
        scope, dot, name = key.rpartition(".")
        if dot:
            if not any(a.name == scope for a, _ in method_specs):
                raise UsageError(f"--opt {key}: method {scope!r} is not among --methods")
            if not any(a.name == scope and name in a.options for a, _ in method_specs):
                adapter = next(a for a, _ in method_specs if a.name == scope)
                raise UsageError(f"--opt {key}: {scope!r} has no option {name!r}; options: {', '.join(adapter.options) or 'none'}")
        elif not any(key in a.options for a, _ in method_specs):
            raise UsageError(f"--opt {key}: no selected method has this option (use `bench.py list` to see options)")


def pending_cells(cells: list[Cell], results_dir: Path, rerun: str,
                  fingerprints: Mapping[str, Mapping[str, str]] | None = None) -> tuple[list[Cell], dict[str, dict]]:
    """Cells still to run, and the existing records of the ones skipped (resume).

    rerun: "none" keeps every finished record made from the same data and weights; "failed" also
    re-runs cells whose record is not ok; "stale" re-runs only records made from other data; "all"
    re-runs everything. An interrupted cell is never finished: it resumes from its checkpoint.
    `fingerprints` (dataset -> split hashes) is what this run would read; see `bench.resume`.
    """
    from bench.resume import plan_resume

    plan = plan_resume(cells, results_dir, rerun, fingerprints)
    return plan.todo, plan.done
