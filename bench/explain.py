"""`bench.py explain`: draw what saved models compute on the same few test images.

For each saved model (`bench.models`) and dataset: N test images spread evenly over the test
split (the same ones for every model of that dataset), centre-cropped by the model's own test
transform, through the method's explain hook (`methods.explain.explain`), one PNG per image
(`bench.report.explain_plots`) under `<results>/explain/`, listed in `explain/manifest.json` for
the gallery of `index.html` (`bench.report.gallery`). Entries of other models stay in the
manifest; this model's entries for this dataset are replaced.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from bench.atomic import atomic_write_bytes, atomic_write_text
from bench.models import SavedModel
from bench.records import safe_name
from bench.report.gallery import EXPLAIN_DIR, MANIFEST_SCHEMA, manifest_path

GALLERY_SCALE, GALLERY_MAX = 0.8, 640  # a figure's width in index.html: 80% of its pixels, at most 640 px


def image_indices(n_test: int, count: int) -> list[int]:
    """`count` indices spread evenly over a split of `n_test` (class-sorted splits: several classes)."""
    count = min(count, n_test)
    return sorted({int(round(i)) for i in np.linspace(0, n_test - 1, count)}) if count else []


def _numpy(value: Any) -> Any:
    return value.detach().float().cpu().numpy() if isinstance(value, torch.Tensor) and value.is_floating_point() \
        else value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value


def to_uint8(normalised: torch.Tensor) -> np.ndarray:
    """A normalised network input ``[3, H, W]`` back to ``[H, W, 3]`` uint8 for display."""
    from bench.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    pixels = (normalised.detach().float().cpu() * std + mean).clamp(0, 1)
    return (pixels * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def explain_model(saved: SavedModel, dataset: str, count: int, results_dir: Path, data_root: Path,
                  data_options: dict, device: torch.device) -> list[dict[str, Any]]:
    """Figures of one saved model on `count` test images of `dataset`; returns their manifest entries."""
    from bench.data import check_files, get_card, materialize, open_dataset
    from bench.data.transforms import normalize
    from bench.evaluation import check_fits
    from bench.loaders import split_dataset
    from bench.report.explain_plots import ExplainItem, explain_figure, png_bytes
    from methods import method_names
    from methods.explain import explain

    card = get_card(dataset)
    check_fits(saved, card.name, card.num_classes, None)
    materialize(card, data_root)
    data = open_dataset(card, data_root, data_options.get(card.name))
    check_files(data)
    recipe = saved.recipe()
    test = split_dataset(data.test, "test", recipe)
    indices = image_indices(len(data.test), count)
    pairs = [test[i] for i in indices]
    images = torch.stack([torch.as_tensor(p[0]) for p in pairs])
    targets = [int(p[1]) for p in pairs]
    names = list(data.class_names or saved.meta.get("class_names") or [])
    model = saved.build().to(device)
    result = explain(model, normalize(images).to(device))
    kind, geometry = result.pop("kind"), result.pop("geometry")
    arrays = {k: _numpy(v) for k, v in result.items()}
    predicted = arrays["logits"].argmax(axis=1)
    shown = [img.permute(1, 2, 0).numpy() for img in images]
    folder = (Path(EXPLAIN_DIR) / safe_name(card.name) / safe_name(saved.meta["method_label"])
              / f"seed{saved.meta['seed']}-{saved.meta['cell_id']}")
    order = method_names().index(saved.meta["method"]) if saved.meta["method"] in method_names() else len(method_names())
    entries = []
    for b, (index, target) in enumerate(zip(indices, targets)):
        sample = {k: v[b] for k, v in arrays.items() if isinstance(v, np.ndarray) and v.shape[:1] == (len(indices),)}
        extras = {"zoomed": to_uint8(result["zoomed"][b])} if "zoomed" in result else {}
        item = ExplainItem(saved.meta["method_label"], shown[b], name_of(names, target), name_of(names, predicted[b]),
                           sample, geometry, names, images=shown, image_ids=indices, extras=extras)
        relative = folder / f"test{index:05d}.png"
        fig = explain_figure(kind, item)
        data_png = png_bytes(fig)
        atomic_write_bytes(Path(results_dir) / relative, data_png)
        entries.append({"dataset": card.name, "method": saved.meta["method"], "method_label": saved.meta["method_label"],
                        "seed": saved.meta["seed"], "cell_id": saved.meta["cell_id"], "order": order, "kind": kind,
                        "image": index, "file": relative.as_posix(), "true": item.true, "pred": item.pred,
                        "correct": item.correct, "width": min(GALLERY_MAX, round(GALLERY_SCALE * fig.get_figwidth() * fig.dpi))})
    return entries


def name_of(names: Sequence[str], index: int) -> str:
    index = int(index)
    return str(names[index]) if 0 <= index < len(names) else f"class {index}"


def update_manifest(results_dir: Path, entries: list[dict[str, Any]]) -> Path:
    """Replace the manifest entries of the (model, dataset) pairs in `entries`, keep the others."""
    path = manifest_path(results_dir)
    try:
        old = json.loads(path.read_text()).get("figures", [])
    except (OSError, ValueError, AttributeError):
        old = []
    done = {(e["cell_id"], e["dataset"]) for e in entries}
    kept = [e for e in old if isinstance(e, dict) and (e.get("cell_id"), e.get("dataset")) not in done]
    figures = sorted(kept + entries, key=lambda e: (e["dataset"], e["order"], e["method_label"], e["seed"],
                                                    e["cell_id"], e["image"]))
    return atomic_write_text(path, json.dumps({"schema_version": MANIFEST_SCHEMA, "figures": figures}, indent=1,
                                              sort_keys=True) + "\n")
