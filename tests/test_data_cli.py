"""`bench.py data`: statistics of good datasets, one line and exit status 2 for each broken one."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

from tests import layouts
from tests.conftest import run_bench


def one_error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("bench.py: error: "), result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def good_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("good")
    layouts.write_ufg(root / "COTTON", 80, {"train": 2, "test": 1})
    layouts.write_cub(root / "CUB_200_2011", 200)
    return root


def test_json_statistics_of_cotton_and_cub(good_root):
    result = run_bench("data", "--datasets", "cotton,cub", "--data-root", str(good_root), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["decoded"] is True
    cotton, cub = report["datasets"]
    assert (cotton["name"], cotton["format"], cotton["ok"], cotton["num_classes"]) == ("cotton", "ufg", True, 80)
    assert cotton["root"] == str(good_root / "COTTON")
    train = cotton["splits"]["train"]
    assert (train["images"], train["expected"], train["classes_seen"], train["label_min"], train["label_max"]) == \
        (160, 240, 80, 0, 79)
    assert (train["missing"], train["unreadable"], len(train["hash"])) == (0, 0, 16)
    assert "cotton: the train split has 160 images; the card expects 240" in cotton["warnings"]
    assert cub["format"] == "cub" and cub["splits"]["test"]["images"] == 200
    assert cub["splits"]["train"]["hash"] != cub["splits"]["test"]["hash"]


def test_text_report_and_group_expansion(tmp_path):
    for r in (1, 3, 4, 5, 6):
        layouts.write_ufg(tmp_path / f"SoyAgeing-R{r}" / f"R{r}", 198)
    result = run_bench("data", "--datasets", "soyageing", "--data-root", str(tmp_path), "--no-decode")
    assert result.returncode == 0, result.stderr
    for r in (1, 3, 4, 5, 6):
        assert f"soyageing_r{r}: ufg at {tmp_path}/SoyAgeing-R{r}/R{r} (198 classes)" in result.stdout
    assert "soyageing_r2" not in result.stdout
    assert "0..197" in result.stdout and "unreadable" in result.stdout


def _missing_anno(root):
    (root / "anno" / "train.txt").unlink()


def _missing_image(root):
    (root / "images" / "c005" / "test_0.png").unlink()


def _out_of_range(root):
    anno = root / "anno" / "train.txt"
    anno.write_text(anno.read_text() + "c000/train_0.png 81\n")


def _zero_based(root):
    layouts.write_ufg(root, 80, base=0)


def _empty_split(root):
    (root / "anno" / "test.txt").write_text("\n")


def _wrong_class_count(root):
    anno = root / "anno" / "train.txt"
    anno.write_text("".join(line + "\n" for line in anno.read_text().splitlines() if not line.endswith(" 80")))


def _unreadable(root):
    (root / "images" / "c003" / "train_0.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")


@pytest.mark.parametrize("breaks, message", [
    (_missing_anno, r"cotton: missing \S+/anno/train.txt; expected anno/train.txt"),
    (_missing_image, r"cotton: 1 of 80 images listed in \S+test.txt are missing under \S+, e.g. c005/test_0.png"),
    (_out_of_range, r"cotton: \S+train.txt:81: label 81 is out of range 1..80 for 80 classes"),
    (_zero_based, r"label 0 is out of range 1..80 .* looks 0-based"),
    (_empty_split, r"cotton: \S+test.txt lists no images \(empty split\)"),
    (_wrong_class_count, r"train split has images of 79 classes but the card says 80 \(wrong class count\)"),
    (_unreadable, r"1 of 80 images of the train split cannot be decoded, e.g. c003/train_0.png"),
])
def test_broken_dataset_is_one_line_and_exit_2(tmp_path, breaks, message):
    root = layouts.write_ufg(tmp_path / "cotton", 80)
    breaks(root)
    line = one_error_line(run_bench("data", "--datasets", "cotton", "--data-root", str(tmp_path)))
    assert re.search(message, line), line


def test_broken_dataset_with_json_still_prints_the_report(tmp_path):
    root = layouts.write_ufg(tmp_path / "cotton", 80)
    _missing_image(root)
    result = run_bench("data", "--datasets", "cotton", "--data-root", str(tmp_path), "--json")
    one_error_line(result)
    report = json.loads(result.stdout)["datasets"][0]
    assert report["ok"] is False and report["splits"]["test"]["missing_first"] == ["c005/test_0.png"]


@pytest.mark.parametrize("args, message", [
    (["--datasets", "cottn"], r"unknown dataset 'cottn'"),
    (["--datasets", "cotton", "--data-root", "/nonexistent/x"], r"--data-root /nonexistent/x does not exist"),
    (["--datasets", "cotton", "--data-opt", "cotton.colour=red"], r"unknown reader option 'colour'"),
    (["--datasets", "cotton", "--data-opt", "label_offset=0"], r"--data-opt expects NAME.KEY=VALUE"),
])
def test_bad_flags_are_one_line(tmp_path, args, message):
    layouts.write_ufg(tmp_path / "cotton", 80)
    line = one_error_line(run_bench("data", "--data-root", str(tmp_path), *args))
    assert re.search(message, line), line


def test_data_opt_reads_a_zero_based_copy(tmp_path):
    layouts.write_ufg(tmp_path / "cotton", 80, base=0)
    result = run_bench("data", "--datasets", "cotton", "--data-root", str(tmp_path), "--data-opt",
                       "cotton.label_offset=0", "--json", "--no-decode")
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)["datasets"][0]["splits"]["train"]
    assert (stats["label_min"], stats["label_max"], stats["unreadable"]) == (0, 79, None)


def test_run_preflight_fails_in_seconds_on_a_broken_dataset(tmp_path):
    root = layouts.write_ufg(tmp_path / "cotton", 80)
    _missing_image(root)
    result = run_bench("--datasets", "cotton", "--data-root", str(tmp_path), "--results-dir", str(tmp_path / "res"),
                       "--no-progress", "--steps", "2")
    line = one_error_line(result)
    assert "are missing under" in line and not (tmp_path / "res" / "runs").exists()


def test_grayscale_16bit_and_palette_images_pass_the_decode_check(tmp_path):
    root = layouts.write_ufg(tmp_path / "cotton", 80)
    Image.fromarray(np.full((10, 12), 50000, np.uint16)).save(root / "images" / "c001" / "train_0.png")
    layouts.image(2, 0).convert("P").save(root / "images" / "c002" / "train_0.png")
    # a CMYK TIFF behind a .png name: PIL goes by the content, as the originals' readers did
    layouts.image(3, 0).convert("CMYK").save(root / "images" / "c003" / "train_0.png", format="TIFF")
    result = run_bench("data", "--datasets", "cotton", "--data-root", str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["datasets"][0]["splits"]["train"]["unreadable"] == 0


def test_data_opt_on_a_group_applies_to_every_member(tmp_path):
    for r in (1, 3, 4, 5, 6):
        layouts.write_ufg(tmp_path / f"R{r}", 198, base=0)
    result = run_bench("data", "--datasets", "soyageing", "--data-root", str(tmp_path), "--data-opt",
                       "soyageing.label_offset=0", "--no-decode", "--json")
    assert result.returncode == 0, result.stderr
    assert [d["splits"]["test"]["label_min"] for d in json.loads(result.stdout)["datasets"]] == [0] * 5
    line = one_error_line(run_bench("data", "--datasets", "soyageing", "--data-path", f"soyageing={tmp_path}"))
    assert "soyageing is a group of soyageing_r1" in line
