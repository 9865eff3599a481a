"""Trained models as artifacts: `--save-model` keeps each finished cell's final weights.

`<results>/models/<cell_id>/` holds `model.safetensors` (the unwrapped state dict) and
`model.json` (method, variant, options, backbone geometry, recipe, class names, cell id and the
record's path), each written atomically, the JSON last: a folder without it is incomplete and is
ignored. `load_model` rebuilds the module through the method adapter (no pretrained file is read:
the state dict holds every weight) so `bench.py eval` and `bench.py explain` run the very code
that was trained.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from bench.atomic import atomic_write_bytes, atomic_write_text
from bench.errors import UsageError

MODELS_DIR = "models"
WEIGHTS = "model.safetensors"
META = "model.json"
MODEL_SCHEMA = 1


def model_dir(results_dir: Path, cell_id: str) -> Path:
    return Path(results_dir) / MODELS_DIR / cell_id


def save_model(accelerator, model, cell, class_names: Sequence[str] | None, results_dir: Path) -> dict | None:
    """Write the cell's final weights and description; every rank calls (ZeRO-3 gathers the weights).

    Returns the record's `saved_model` block on the main process, None elsewhere.
    """
    from safetensors.torch import save

    from bench.data import get_card

    tensors = full_state_dict(accelerator, model)
    if not accelerator.is_main_process:
        return None
    directory = model_dir(results_dir, cell.cell_id)
    data = save(tensors, metadata={"format": "pt", "cell_id": cell.cell_id})
    atomic_write_bytes(directory / WEIGHTS, data)
    backbone = dataclasses.asdict(cell.backbone)
    meta = {
        "schema_version": MODEL_SCHEMA,
        "cell_id": cell.cell_id,
        "method": cell.method,
        "variant": cell.variant,
        "method_label": cell.method_label,
        "options": cell.options,
        "dataset": cell.dataset,
        "seed": cell.seed,
        "preset": cell.preset,
        "precision": cell.precision,
        "num_classes": get_card(cell.dataset).num_classes,
        "class_names": list(map(str, class_names)) if class_names else None,
        "backbone": backbone,
        "recipe": cell.recipe.to_dict(),
        "record": cell.record_path(results_dir).relative_to(results_dir).as_posix(),
        "weights": {"file": WEIGHTS, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)},
    }
    atomic_write_text(directory / META, json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
    return {"path": directory.relative_to(results_dir).as_posix(), **meta["weights"]}


def full_state_dict(accelerator, model) -> dict:
    """The unwrapped model's whole state dict on the CPU (collective: every rank calls).

    ZeRO-3 partitions the parameters over the ranks; they are gathered for the copy with
    DeepSpeed's `GatheredParameters` (accelerate's `get_state_dict` would need the engine to be
    configured to gather 16-bit weights on save)."""
    from accelerate.utils import DistributedType

    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if accelerator.distributed_type == DistributedType.DEEPSPEED and plugin is not None and plugin.zero_stage == 3:
        import deepspeed

        module = accelerator.unwrap_model(model)
        with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
            state = module.state_dict()
            return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}
    state = accelerator.get_state_dict(model)
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}


@dataclass
class SavedModel:
    """A saved model's description (`meta`) and where it lies."""

    directory: Path
    meta: dict[str, Any]

    @property
    def label(self) -> str:
        return f"{self.meta['method_label']} ({self.meta['dataset']} seed {self.meta['seed']}, {self.meta['cell_id']})"

    @property
    def num_classes(self) -> int:
        return int(self.meta["num_classes"])

    def backbone(self):
        from methods.backbone import BackboneConfig

        fields = dict(self.meta["backbone"])
        fields["hybrid_layers"] = tuple(fields.get("hybrid_layers") or ())
        fields["pretrained"] = None  # the state dict holds every weight
        return BackboneConfig(**fields)

    def recipe(self, **overrides):
        from bench.recipe import Recipe

        return Recipe(**{**self.meta["recipe"], **overrides})

    def build(self):
        """The adapter's module with the saved weights loaded (strict)."""
        from safetensors.torch import load_file

        from methods import get_method

        model = get_method(self.meta["method"]).create(self.num_classes, self.backbone(), self.meta["options"],
                                                      self.recipe())
        try:
            state = load_file(str(self.directory / WEIGHTS))
            model.load_state_dict(state, strict=True)
        except (OSError, RuntimeError, ValueError) as exc:
            raise UsageError(f"--model {self.directory}: the weights do not load into {self.meta['method_label']} "
                             f"({' '.join(str(exc).split())[:200]})") from None
        return model


def open_model(directory: Path) -> SavedModel:
    directory = Path(directory)
    try:
        meta = json.loads((directory / META).read_text())
    except (OSError, ValueError):
        raise UsageError(f"--model {directory}: no readable {META}; expected a folder written by --save-model "
                         f"(results/models/<cell_id>)") from None
    if not isinstance(meta, dict) or meta.get("schema_version") != MODEL_SCHEMA:
        raise UsageError(f"--model {directory}: {META} is not a fgbench model description (schema {MODEL_SCHEMA})")
    if not (directory / WEIGHTS).is_file():
        raise UsageError(f"--model {directory}: {WEIGHTS} is missing")
    return SavedModel(directory, meta)


def iter_models(results_dir: Path) -> Iterator[SavedModel]:
    """Every complete saved model under `<results>/models`, in cell-id order."""
    root = Path(results_dir) / MODELS_DIR
    if not root.is_dir():
        return
    for directory in sorted(p for p in root.iterdir() if (p / META).is_file() and (p / WEIGHTS).is_file()):
        try:
            yield open_model(directory)
        except UsageError:
            continue


def select_models(results_dir: Path, methods: str | None, datasets: Sequence[str] | None,
                  seeds: Sequence[int] | None) -> list[SavedModel]:
    """Saved models of a results folder matching `--methods` (labels or names, or `all`), datasets and seeds,
    ordered as `--methods` names them (then dataset, seed)."""
    wanted = None if methods in (None, "all") else [m.strip() for m in methods.split(",") if m.strip()]
    found = [m for m in iter_models(results_dir)
             if (wanted is None or m.meta["method_label"] in wanted or m.meta["method"] in wanted)
             and (datasets is None or m.meta["dataset"] in datasets)
             and (seeds is None or m.meta["seed"] in seeds)]
    if not found:
        raise UsageError(f"no saved model under {Path(results_dir) / MODELS_DIR} matches --methods {methods or 'all'}"
                         f"{' --datasets ' + ','.join(datasets) if datasets else ''}"
                         f"{' --seeds ' + ','.join(map(str, seeds)) if seeds else ''}; "
                         "train with `bench.py ... --save-model` first")

    from methods import method_names

    names = wanted or method_names()

    def order(m: SavedModel):
        rank = next((i for i, w in enumerate(names) if w in (m.meta["method_label"], m.meta["method"])), len(names))
        return rank, m.meta["dataset"], m.meta["seed"], m.meta["method_label"]

    return sorted(found, key=order)
