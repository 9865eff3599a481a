"""No silent skips: unreadable records, corrupt images, one-class data, untested classes; user dataset cards."""

from __future__ import annotations

import json
import shutil

import pytest

from bench import records
from bench.cli import main
from tests import layouts


def _card(path, name, num_classes=3, aliases=()):
    path.write_text(f"name: {name}\nformat: ufg\nnum_classes: {num_classes}\naliases: {list(aliases)}\n")
    return path


def _demo_copy(demo_root, tmp_path):
    root = tmp_path / "data-copy"
    shutil.copytree(demo_root / "demo", root / "demo")
    return root


def test_an_unreadable_record_is_named_by_dry_run_report_and_the_run_that_overwrites_it(fast_run_args, tmp_path,
                                                                                        capsys):
    assert main([*fast_run_args, "--dry-run"]) == 0
    cell_id = capsys.readouterr().out.split()[0]
    path = records.record_path(tmp_path / "results", "demo", "vit", 0, cell_id)
    path.parent.mkdir(parents=True)
    path.write_text('{"schema_version": 1, "cell_')
    assert main([*fast_run_args, "--dry-run"]) == 0
    assert f"{path} is not a readable record (not valid JSON" in capsys.readouterr().err
    assert main(["report", "--results-dir", str(tmp_path / "results"), "--no-paper"]) == 0
    assert f"{path} is not a readable record (not valid JSON" in capsys.readouterr().err
    assert main(fast_run_args) == 0
    captured = capsys.readouterr()
    assert f"{path} is not a readable record" in captured.out + captured.err and "overwrites it" in captured.out
    assert json.loads(path.read_text())["status"] == "ok"


@pytest.mark.parametrize("cache", [True, False])
def test_a_corrupt_image_fails_the_cell_naming_the_file(cache, fast_run_args, demo_root, tmp_path):
    root = _demo_copy(demo_root, tmp_path)
    broken = root / "demo" / "images" / "red_solid" / "train_001.png"
    broken.write_bytes(b"\x89PNG not really")
    args = [a if a != str(demo_root) else str(root) for a in fast_run_args] + ([] if cache else ["--no-cache"])
    assert main(args) == 1
    (path,) = records.runs_dir(tmp_path / "results").rglob("*.json")
    record = json.loads(path.read_text())
    assert record["status"] == "failed" and f"cannot decode image {broken} of the train split" in record["error"]


def test_a_one_class_dataset_is_refused(tmp_path, capsys):
    card = _card(tmp_path / "one.yaml", "oneclass", num_classes=1)
    assert main(["data", "--card", str(card), "--datasets", "oneclass", "--data-root", str(tmp_path)]) == 2
    assert "num_classes is 1; a classification benchmark needs at least two classes" in capsys.readouterr().err


def test_classes_missing_from_test_are_named(demo_root, tmp_path, capsys):
    root = _demo_copy(demo_root, tmp_path)
    listing = root / "demo" / "anno" / "test.txt"
    listing.write_text("".join(line for line in listing.read_text().splitlines(keepends=True)
                               if not line.startswith("cyan_ring/")))
    assert main(["data", "--datasets", "demo", "--data-root", str(root), "--no-decode"]) == 0
    out = capsys.readouterr().out
    assert "the test split has no image of 1 class(es) that train has: label 9" in out, out


def test_a_user_card_adds_a_dataset(tmp_path, capsys):
    layouts.write_ufg(tmp_path / "data" / "leaves", 3, {"train": 2, "test": 1})
    card = _card(tmp_path / "leaves.yaml", "leaves")
    assert main(["data", "--card", str(card), "--datasets", "leaves", "--data-root", str(tmp_path / "data")]) == 0
    assert "leaves" in capsys.readouterr().out
    assert main(["list", "--card", str(card)]) == 0 and "leaves" in capsys.readouterr().out
    assert main(["list"]) == 0 and "leaves" not in capsys.readouterr().out  # only for the command that names it


@pytest.mark.parametrize("name, aliases, taken", [("mycub", ["CUB"], "cub"), ("cotton", [], "cotton")])
def test_a_user_card_never_shadows_a_built_in_one(name, aliases, taken, tmp_path, monkeypatch, capsys):
    cards = tmp_path / "cards"
    cards.mkdir()
    card = _card(cards / "mine.yaml", name, aliases=aliases)
    assert main(["list", "--card", str(card)]) == 2
    assert f"already taken by the built-in dataset {taken}" in capsys.readouterr().err
    monkeypatch.setenv("FGBENCH_CARDS", str(cards))
    from bench.data.cards import load_cards

    load_cards.cache_clear()
    try:
        assert main(["list"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"already taken by the built-in dataset {taken}" in err[0]
    finally:
        monkeypatch.delenv("FGBENCH_CARDS")
        load_cards.cache_clear()


def test_unknown_dataset_says_how_to_add_one(tmp_path, capsys):
    assert main(["--datasets", "imagenet", "--results-dir", str(tmp_path), "--dry-run"]) == 2
    assert "to add one, write a card like datasets/cub.yaml and pass --card FILE" in capsys.readouterr().err
