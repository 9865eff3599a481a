"""Cell ids, matrix expansion, recipe layering and resume decisions."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import records
from bench.errors import UsageError
from bench.matrix import Cell, build_cells, canonical_hash, parse_seeds, pending_cells
from bench.recipe import Recipe, resolve_recipe
from methods import get_method


def cells(seeds=(0,), overrides=None, options=None, precision="no", world_size=1):
    return build_cells([(get_method("vit"), None)], ["demo"], list(seeds), "tiny", precision, "ddp", world_size,
                       overrides or {}, options or {})


def test_canonical_hash_ignores_key_order():
    assert canonical_hash({"a": 1, "b": {"x": 1, "y": 2}}) == canonical_hash({"b": {"y": 2, "x": 1}, "a": 1})
    assert canonical_hash({"a": 1}) != canonical_hash({"a": 2})


def test_cell_id_is_stable_and_depends_only_on_what_changes_results():
    a, b = cells(), cells()
    assert a[0].cell_id == b[0].cell_id and len(a[0].cell_id) == 16
    # a value equal to the resolved default leaves the id unchanged, a different one changes it
    assert cells(overrides={"lr": a[0].recipe.lr})[0].cell_id == a[0].cell_id
    assert cells(overrides={"lr": 0.123})[0].cell_id != a[0].cell_id
    assert cells(seeds=(1,))[0].cell_id != a[0].cell_id
    assert cells(precision="bf16")[0].cell_id != a[0].cell_id
    assert cells(world_size=2)[0].cell_id != a[0].cell_id
    # the seed-free setting id groups seeds into one leaderboard row
    two = cells(seeds=(0, 1))
    assert two[0].setting_id == two[1].setting_id and two[0].cell_id != two[1].cell_id


def test_cell_id_is_independent_of_results_and_data_folders(tmp_path):
    cell = cells()[0]
    p1, p2 = cell.record_path(tmp_path / "r1"), cell.record_path(tmp_path / "r2")
    assert p1.name == p2.name and cell.cell_id in p1.name


def test_recipe_layers_apply_in_order_and_report_their_source():
    recipe, sources = resolve_recipe([("a", {"lr": 0.1, "steps": 5}), ("b", {"lr": 0.2}), ("c", None)])
    assert recipe.lr == 0.2 and recipe.steps == 5 and recipe.batch_size == Recipe().batch_size
    assert sources["lr"] == "b" and sources["steps"] == "a" and sources["batch_size"] == "default"


def test_demo_tiny_recipe_comes_from_preset_and_card():
    cell = cells()[0]
    assert cell.recipe.img_size == 64 and cell.recipe.optimizer == "adamw"
    assert cell.recipe_sources["optimizer"] == "preset tiny"
    assert cell.recipe_sources["steps"].endswith("presets.tiny")


@pytest.mark.parametrize("layer, message", [
    ({"lrr": 1}, "unknown recipe key 'lrr'"),
    ({"steps": "many"}, "must be int"),
    ({"steps": 0}, "steps must be >= 1"),
    ({"optimizer": "lion"}, "optimizer must be one of"),
    ({"img_size": 100, "resize_size": 90}, "smaller than img_size"),
])
def test_bad_recipe_values_are_usage_errors(layer, message):
    with pytest.raises(UsageError, match=message):
        resolve_recipe([("test", layer)])


def test_parse_seeds():
    assert parse_seeds("0,1,2") == [0, 1, 2]
    assert parse_seeds("0-3,7,2") == [0, 1, 2, 3, 7]
    for bad in ("", "a", "1,,x", "-1"):
        with pytest.raises(UsageError):
            parse_seeds(bad)


def _record_for(cell: Cell, status: str) -> dict:
    return {"schema_version": records.SCHEMA_VERSION, "cell_id": cell.cell_id, "status": status}


def test_pending_cells_resume_and_rerun(tmp_path: Path):
    a, b, c = cells(seeds=(0, 1, 2))
    records.write_record(a.record_path(tmp_path), _record_for(a, "ok"))
    records.write_record(b.record_path(tmp_path), _record_for(b, "failed"))
    todo, done = pending_cells([a, b, c], tmp_path, "none")
    assert [x.seed for x in todo] == [2] and set(done) == {a.cell_id, b.cell_id}
    todo, _ = pending_cells([a, b, c], tmp_path, "failed")
    assert [x.seed for x in todo] == [1, 2]
    todo, _ = pending_cells([a, b, c], tmp_path, "all")
    assert [x.seed for x in todo] == [0, 1, 2]
    # a corrupt (e.g. truncated) file is not a finished record
    a.record_path(tmp_path).write_text('{"schema_version": 1, "cell_')
    todo, _ = pending_cells([a, b, c], tmp_path, "none")
    assert [x.seed for x in todo] == [0, 2]
