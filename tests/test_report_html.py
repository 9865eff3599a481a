"""`results/index.html` in a real browser: loads without console errors, sorts, shows table, scatter and
the explain gallery with its images loaded.

Needs Debian's `chromium`; the fixture installs it when absent and skips only where it cannot.
"""

from __future__ import annotations

import numpy as np
import pytest
from headless_chromium import Browser, ensure_chromium
from PIL import Image
from synthetic_records import mixed_matrix

from bench.atomic import atomic_write_bytes
from bench.explain import update_manifest
from bench.report import write_report
from bench.report.explain_plots import ExplainItem, explain_figure, png_bytes
from methods.explain import TokenGeometry

WIDTH, HEIGHT = 1400, 1800


@pytest.fixture(scope="module")
def chromium():
    binary, why = ensure_chromium()
    if binary is None:
        pytest.skip(why)
    return binary


def gallery(results) -> None:
    """Explain figures of two methods on the same two images, listed as `bench.py explain` lists them."""
    geometry = TokenGeometry(img_size=64, patch=8, stride=8, grid=(8, 8), prefix=1)
    rng = np.random.default_rng(0)
    entries = []
    for order, (method, kind, sample) in enumerate([("vit", "rollout", {"heat": rng.random((8, 8))}),
                                                     ("transfg", "parts", {"parts": np.array([1, 9, 30, 64])})]):
        for image in (0, 5):
            pixels = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
            item = ExplainItem(method, pixels, "class 1", "class 1" if image else "class 2", sample, geometry)
            fig = explain_figure(kind, item)
            file = f"explain/cotton/{method}/seed0-{method}/test{image:05d}.png"
            atomic_write_bytes(results / file, png_bytes(fig))
            entries.append({"dataset": "cotton", "method": method, "method_label": method, "seed": 0,
                            "cell_id": method, "order": order, "kind": kind, "image": image, "file": file,
                            "true": item.true, "pred": item.pred, "correct": item.correct, "width": 360})
    update_manifest(results, entries)


@pytest.fixture
def page(chromium, tmp_path):
    results = tmp_path / "results"
    mixed_matrix(results)
    gallery(results)
    write_report(results)
    browser = Browser(chromium, tmp_path / "profile", WIDTH, HEIGHT)
    try:
        browser.open((results / "index.html").as_uri())
        yield browser
    finally:
        browser.close()


def rect(browser: Browser, selector: str) -> dict:
    return browser.evaluate(f"(() => {{ const r = document.querySelector({selector!r}).getBoundingClientRect();"
                            " return {x: r.x, y: r.y, width: r.width, height: r.height}; })()")


def busy(image: Image.Image, box: dict) -> float:
    """Share of non-white pixels inside `box`: a rendered table or plot is far from blank."""
    crop = np.asarray(image.convert("L").crop((int(box["x"]), int(box["y"]), int(box["x"] + box["width"]),
                                               int(box["y"] + box["height"]))))
    return float((crop < 200).mean())


def test_page_loads_cleanly_and_shows_table_and_scatter(page, tmp_path):
    assert page.errors() == []
    assert page.evaluate("document.querySelectorAll('table.sortable').length") == 4  # board + provenance, x2 datasets
    assert page.evaluate("document.querySelectorAll('#ds-cotton figure svg').length") == 3  # scatter, seeds, curves
    assert page.evaluate("document.querySelector('#ds-cotton tbody tr td:nth-child(2)').textContent") == "ffvt"
    links = page.evaluate("Array.from(document.querySelectorAll('#ds-cotton table.sortable a[title]'))"
                          ".map(a => [a.getAttribute('href'), a.title])")
    assert all(href.startswith("runs/cotton/") and "git 0123456789" in title and "torch 2.14.1" in title
               for href, title in links) and len(links) == 11
    table, scatter = rect(page, "#ds-cotton table.sortable"), rect(page, "#ds-cotton figure svg")
    for box in (table, scatter):
        assert box["width"] > 300 and box["height"] > 80 and box["y"] + box["height"] <= HEIGHT, box
    shot = Image.open(page.screenshot(tmp_path / "index.png"))
    assert shot.size == (WIDTH, HEIGHT)
    assert busy(shot, table) > 0.03 and busy(shot, scatter) > 0.01
    # the gallery: same images across methods side by side, every PNG loaded (a failed load is an error above)
    images = ("Array.from(document.querySelectorAll('#gallery img'))"
              ".map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])")
    loaded = page.evaluate(images)
    assert len(loaded) == 4 and all(done and width > 300 for _, done, width in loaded), loaded
    assert page.evaluate("document.querySelectorAll('#gallery tbody tr').length") == 2
    assert page.evaluate("document.querySelector('#gallery thead').textContent").count("seed 0") == 2
    page.evaluate("document.querySelector('#gallery').scrollIntoView()")
    figure = rect(page, "#gallery img")
    assert figure["width"] == 360 and 0 <= figure["y"] and figure["y"] + figure["height"] <= HEIGHT, figure
    shot = Image.open(page.screenshot(tmp_path / "gallery.png"))
    assert busy(shot, figure) > 0.2
    assert page.errors() == []


def test_table_sorts_on_header_click(page):
    column = ("Array.from(document.querySelectorAll('#ds-cotton table.sortable')[0].tBodies[0].rows)"
              ".map(r => r.cells[1].textContent)")
    click = ("Array.from(document.querySelectorAll('#ds-cotton table.sortable')[0].querySelectorAll('th button'))"
             ".find(b => b.textContent === {label!r}).click()")
    page.evaluate(click.format(label="Train img/s median"))
    assert page.evaluate(column) == ["mixvit", "ffvt", "vit"]  # 61 < 91 < 121 images/s
    page.evaluate(click.format(label="Train img/s median"))
    assert page.evaluate(column) == ["vit", "ffvt", "mixvit"]
    page.evaluate(click.format(label="Method"))
    assert page.evaluate(column) == ["ffvt", "mixvit", "vit"]
    page.evaluate(click.format(label="Δ vs baseline"))  # vit has no delta: missing values sort last
    assert page.evaluate(column) == ["mixvit", "ffvt", "vit"]
    assert page.errors() == []


def test_error_detector_sees_console_errors_exceptions_and_failed_loads(chromium, tmp_path):
    broken = tmp_path / "broken.html"
    broken.write_text('<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head><body>'
                      '<img src="missing.png"><script>console.error("boom"); undefinedFunction();</script>'
                      "</body></html>")
    browser = Browser(chromium, tmp_path / "profile", 400, 300)
    try:
        browser.open(broken.as_uri())
        errors = browser.errors()
    finally:
        browser.close()
    assert any(e.startswith("console.error") and "boom" in e for e in errors), errors
    assert any(e.startswith("exception") and "undefinedFunction" in e for e in errors), errors
    assert any("missing.png" in e for e in errors), errors
