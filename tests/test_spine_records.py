"""Atomic record writes and tolerant reads."""

from __future__ import annotations

import json
import os

import pytest

from bench import records


def test_write_record_is_atomic_and_strict_json(tmp_path):
    path = tmp_path / "runs" / "x" / "seed0-abc.json"
    records.write_record(path, {"schema_version": 1, "status": "ok", "cell_id": "abc", "v": float("nan")})
    data = json.loads(path.read_text())
    assert data["v"] is None  # NaN is not JSON; stored as null
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left behind


def test_failed_write_leaves_old_record_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "rec.json"
    records.write_record(path, {"schema_version": 1, "status": "ok", "cell_id": "a", "n": 1})

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        records.write_record(path, {"schema_version": 1, "status": "ok", "cell_id": "a", "n": 2})
    monkeypatch.undo()
    assert json.loads(path.read_text())["n"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rec.json"]


def test_read_record_rejects_partial_foreign_and_unknown_status(tmp_path):
    good = tmp_path / "good.json"
    records.write_record(good, {"schema_version": records.SCHEMA_VERSION, "status": "ok", "cell_id": "a"})
    assert records.read_record(good)["cell_id"] == "a"
    (tmp_path / "partial.json").write_text('{"schema_version": 1, "sta')
    (tmp_path / "old.json").write_text(json.dumps({"schema_version": 0, "status": "ok"}))
    (tmp_path / "weird.json").write_text(json.dumps({"schema_version": 1, "status": "maybe"}))
    for name in ("partial.json", "old.json", "weird.json", "missing.json"):
        assert records.read_record(tmp_path / name) is None


def test_iter_records_skips_temporaries_and_stale_ones_are_cleaned(tmp_path):
    runs = records.runs_dir(tmp_path) / "demo" / "vit"
    records.write_record(runs / "seed0-a.json", {"schema_version": 1, "status": "ok", "cell_id": "a"})
    stale = runs / ".seed1-b.json.123.tmp"
    stale.write_text("{")
    fresh = runs / ".seed2-c.json.456.tmp"
    fresh.write_text("{")
    os.utime(stale, (0, 0))
    assert [r["cell_id"] for _, r in records.iter_records(tmp_path)] == ["a"]
    assert records.remove_stale_temporaries(tmp_path) == 1
    assert not stale.exists() and fresh.exists()  # a live writer's temporary is left alone
