"""Training recipes: the hyper-parameters of one run, resolved from layered sources.

A recipe value can come from (lowest to highest precedence): fgbench's defaults (the FFVT/TransFG
recipe, see the FFVT write-up §3), the method adapter, the dataset card (`recipes.default`, then
`recipes.<method family>`), the preset, the card's per-preset block, and finally command-line
flags. `resolve_recipe` returns the recipe and, per field, the layer that set it, so a user can
see why a number is what it is (`bench.py --dry-run`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from bench.errors import UsageError

OPTIMIZERS = ("sgd", "adamw")
# float fields: (name, lowest allowed, bound above it (exclusive) or None); values must be finite.
# lr must be strictly above its bound; clip_grad 0 (or "none") disables clipping.
RANGES = (
    ("lr", 0.0, None),
    ("momentum", 0.0, 1.0),
    ("weight_decay", 0.0, None),
    ("label_smoothing", 0.0, 1.0),
    ("color_jitter", 0.0, None),
    ("clip_grad", 0.0, None),
)
EXCLUSIVE_LOW = {"lr"}
OFF = {"clip_grad": 0.0}  # fields where "none" means "switched off"
SCHEDULES = ("cosine", "linear", "constant")
VAL_SPLITS = ("carved", "shipped")


@dataclass(frozen=True)
class Recipe:
    """Everything that decides what a run learns (performance-only knobs live elsewhere)."""

    img_size: int = 448  # crop size S fed to the model
    resize_size: int = 600  # deterministic Resize((R, R)) before the crop
    batch_size: int = 8  # per device (the originals' --train_batch_size is per process too)
    eval_batch_size: int = 16
    steps: int = 10000  # optimizer updates
    warmup_steps: int = 500
    lr: float = 0.02
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "cosine"
    # 0: optimizer.step() then scheduler.step(), so update s uses multiplier(s) and the first
    # update has lr 0 (FFVT, Mix-ViT, RAMS-Trans); 1: the other order (TransFG).
    lr_step_offset: int = 0
    clip_grad: float = 1.0
    eval_every: int = 200
    grad_accum: int = 1
    color_jitter: float = 0.0  # ColorJitter(b, c, s) strength; 0 disables it
    hflip: bool = True
    label_smoothing: float = 0.0
    # model selection on a validation split (bench/data/valsplit.py): carve this fraction of train
    # (stratified, seeded by the run seed), or use the split the dataset ships
    val_fraction: float = 0.0
    val_split: str = "carved"

    def __post_init__(self) -> None:
        problems = []
        for name in ("img_size", "resize_size", "batch_size", "eval_batch_size", "steps", "eval_every", "grad_accum"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1 (got {getattr(self, name)})")
        if self.warmup_steps < 0:
            problems.append(f"warmup_steps must be >= 0 (got {self.warmup_steps})")
        if self.resize_size < self.img_size:
            problems.append(f"resize_size {self.resize_size} is smaller than img_size {self.img_size}")
        if self.optimizer not in OPTIMIZERS:
            problems.append(f"optimizer must be one of {', '.join(OPTIMIZERS)} (got {self.optimizer!r})")
        if self.schedule not in SCHEDULES:
            problems.append(f"schedule must be one of {', '.join(SCHEDULES)} (got {self.schedule!r})")
        if self.lr_step_offset not in (0, 1):
            problems.append(f"lr_step_offset must be 0 or 1 (got {self.lr_step_offset})")
        if not 0.0 <= self.val_fraction < 1.0:
            problems.append(f"val_fraction must be in [0, 1) (got {self.val_fraction})")
        if self.val_split not in VAL_SPLITS:
            problems.append(f"val_split must be one of {', '.join(VAL_SPLITS)} (got {self.val_split!r})")
        if self.val_split == "shipped" and self.val_fraction > 0:
            problems.append("val_fraction carves a split from train, so it cannot be combined with val_split shipped")
        for name, low, high in RANGES:
            value = getattr(self, name)
            above = value > low if name in EXCLUSIVE_LOW else value >= low
            if not (math.isfinite(value) and above and (high is None or value < high)):
                problems.append(f"{name} must be {_describe_range(name, low, high)} (got {value})")
        if problems:
            raise UsageError("bad recipe: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _describe_range(name: str, low: float, high: float | None) -> str:
    if name in EXCLUSIVE_LOW:
        text = f"finite and > {low:g}"
    elif high is None:
        text = f"finite and >= {low:g}"
    else:
        text = f"in [{low:g}, {high:g})"
    return text + (" (0 or none disables it)" if name in OFF else "")


RECIPE_FIELDS = {f.name: f.type for f in dataclasses.fields(Recipe)}
_CASTS = {"int": int, "float": float, "str": str, "bool": bool}


def coerce_value(name: str, value: Any, source: str) -> Any:
    """Cast `value` to the type of recipe field `name`, or raise a UsageError naming `source`."""
    if name not in RECIPE_FIELDS:
        raise UsageError(
            f"unknown recipe key {name!r} in {source}; expected one of: {', '.join(sorted(RECIPE_FIELDS))}"
        )
    kind = RECIPE_FIELDS[name]
    cast = _CASTS[kind]
    if name in OFF and isinstance(value, str) and value.strip().lower() == "none":
        return OFF[name]
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        raise UsageError(f"recipe key {name!r} in {source} must be true/false (got {value!r})")
    try:
        if kind == "int" and isinstance(value, float) and not value.is_integer():
            raise ValueError
        return cast(value)
    except (TypeError, ValueError):
        raise UsageError(f"recipe key {name!r} in {source} must be {kind} (got {value!r})") from None


def resolve_recipe(layers: Iterable[tuple[str, Mapping[str, Any] | None]]) -> tuple[Recipe, dict[str, str]]:
    """Apply `(source name, overrides)` layers in order on top of `Recipe()`.

    Returns the recipe and a map field -> source that set it ("default" when none did).
    """
    values = Recipe().to_dict()
    sources = {name: "default" for name in values}
    for source, overrides in layers:
        for key, value in (overrides or {}).items():
            if value is None:
                continue
            values[key] = coerce_value(key, value, source)
            sources[key] = source
    return Recipe(**values), sources


def parse_assignments(items: Iterable[str], what: str) -> dict[str, Any]:
    """Parse repeated `key=value` flags; values are YAML scalars (so 0.5 is a float, true a bool)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{what} expects key=value, got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            out[key.strip()] = raw
    return out
