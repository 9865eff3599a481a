"""The explain gallery of `index.html`: `bench.py explain` figures, same test images across methods.

`bench.py explain` writes PNGs under `<results>/explain/` and lists them in
`explain/manifest.json`; the gallery shows, per dataset, one row per test image and one column per
saved model (method, seed), linking the PNGs relatively so the folder can be copied or served.
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import Any

EXPLAIN_DIR = "explain"
MANIFEST = "manifest.json"
MANIFEST_SCHEMA = 1
REQUIRED = {"dataset", "method_label", "seed", "cell_id", "order", "image", "file", "true", "pred", "correct"}


def manifest_path(results_dir: Path) -> Path:
    return Path(results_dir) / EXPLAIN_DIR / MANIFEST


def read_manifest(results_dir: Path) -> list[dict[str, Any]]:
    """The manifest's figures whose PNG still exists (an unreadable manifest is an empty gallery)."""
    try:
        data = json.loads(manifest_path(results_dir).read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(data, dict) or data.get("schema_version") != MANIFEST_SCHEMA:
        return []
    return [f for f in data.get("figures", []) if isinstance(f, dict) and REQUIRED <= set(f)
            and (Path(results_dir) / str(f["file"])).is_file()]


def _column(figure: dict[str, Any]) -> tuple:
    return figure["order"], figure["method_label"], figure["seed"], figure["cell_id"]


def render_gallery(results_dir: Path) -> str:
    """The gallery section ('' when there are no figures)."""
    figures = read_manifest(results_dir)
    if not figures:
        return ""
    parts = ['<section id="gallery"><h2>Explain gallery</h2><p class="note">What each trained model computed on the '
             "same test images, from its own code path (<code>bench.py explain</code>): attention rollout (vit, "
             "sovit), MAWS-selected tokens per layer (ffvt), the part token of each head (transfg), substituted "
             "tokens with their partner and the substitution predictor (mixvit), the DPPM mask, box and zoomed crop "
             "(ramstrans). Each figure names the true class and the prediction.</p>"]
    for dataset in sorted({f["dataset"] for f in figures}):
        mine = [f for f in figures if f["dataset"] == dataset]
        columns = sorted({_column(f) for f in mine})
        images = sorted({f["image"] for f in mine})
        head = "".join(f'<th scope="col" class="text">{escape(c[1])} (seed {c[2]})</th>' for c in columns)
        rows = []
        for image in images:
            cells = []
            for column in columns:
                hit = next((f for f in mine if f["image"] == image and _column(f) == column), None)
                if hit is None:
                    cells.append("<td></td>")
                    continue
                verdict = "correct" if hit["correct"] else "wrong"
                alt = f"{hit['method_label']} on test image {image}: true {hit['true']}, predicted {hit['pred']}"
                cells.append(f'<td class="text"><a href="{escape(hit["file"])}"><img src="{escape(hit["file"])}" '
                             f'alt="{escape(alt)}" width="{int(hit.get("width", 360))}"></a>'
                             f'<div class="{verdict}">{escape(verdict)}: {escape(str(hit["pred"]))}</div></td>')
            true = next(f["true"] for f in mine if f["image"] == image)
            rows.append(f'<tr><th scope="row" class="text">test #{image}<br>true: {escape(str(true))}</th>'
                        f"{''.join(cells)}</tr>")
        parts.append(f'<h3>{escape(dataset)}</h3><div class="scroll"><table class="gallery"><thead><tr>'
                     f'<th scope="col" class="text">Image</th>{head}</tr></thead><tbody>{"".join(rows)}</tbody>'
                     "</table></div>")
    parts.append("</section>")
    return "\n".join(parts)
