"""Stanford Dogs, Stanford Cars, NABirds and iNaturalist 2017: readers on miniature copies of the real
layouts (.mat lists written with scipy, COCO-style JSON), `bench.py data` on them, and one tiny run."""

from __future__ import annotations

import gc
import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest

from tests import layouts
from tests.test_data_readers import assert_paired
from bench.cli import main
from bench.data import get_card, open_dataset
from bench.errors import DatasetError


def one_line_exit_2(capsys, argv) -> str:
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bench.py: error: "), lines
    return lines[0]


@pytest.mark.parametrize("alias, name", [("dogs", "dogs"), ("stanford_dogs", "dogs"), ("dog", "dogs"),
                                         ("cars", "cars"), ("stanford_cars", "cars"), ("car", "cars"),
                                         ("nabirds", "nabirds"), ("NABirds", "nabirds"),
                                         ("inat2017", "inat2017"), ("inat", "inat2017"), ("INat2017", "inat2017")])
def test_aliases_users_type(alias, name):
    assert get_card(alias).name == name


# --- Stanford Dogs -------------------------------------------------------------------------------

def test_dogs_mat_lists_one_based_labels_and_breed_names(tmp_path):
    layouts.write_dogs(tmp_path / "Stanford_Dogs" / "dogs", 120, {"train": 2, "test": 1})  # one wrapper deeper
    data = open_dataset(get_card("dogs"), tmp_path / "Stanford_Dogs")
    assert data.format == "dogs" and (len(data.train), len(data.test)) == (240, 120)
    assert sorted(set(data.train.labels)) == list(range(120))  # .mat labels 1..120 -> 0..119
    assert data.class_names[7] == "n02085627-Breed_7"
    assert data.train.source.endswith("train_list.mat")
    assert_paired(data.train)
    assert_paired(data.test)


def test_dogs_without_file_list_uses_annotation_list_plus_jpg(tmp_path):
    layouts.write_dogs(tmp_path / "dog", 120, with_file_list=False)
    data = open_dataset(get_card("dogs"), tmp_path)
    assert data.test.items[0][0] == "n02085620-Breed_0/n02085620_120.jpg"
    assert_paired(data.test)


def _relabel_into_other_breed(root):
    from scipy.io import loadmat, savemat

    mat = loadmat(root / "test_list.mat")
    mat["labels"][0, 0] = 2  # the first image (Breed_0's folder) now claims label 2
    savemat(root / "test_list.mat", {k: v for k, v in mat.items() if not k.startswith("__")})


def _drop_labels(root):
    from scipy.io import savemat

    savemat(root / "test_list.mat", {"file_list": np.array(["a.jpg"], dtype=object).reshape(-1, 1),
                                     "labels": np.array([[1.0], [2.0]])})


@pytest.mark.parametrize("edit, message", [
    (lambda r: (r / "test_list.mat").unlink(), r"missing \S+test_list.mat; expected a Stanford Dogs split list"),
    (lambda r: (r / "train_list.mat").write_bytes(b"not a mat file"), r"train_list.mat is not a readable MATLAB"),
    (lambda r: layouts.write_dogs(r, 120, base=0), r"label 0 is out of range 1\.\.120 .*looks 0-based"),
    (_drop_labels, r"test_list.mat lists 1 images but 2 labels"),
    (_relabel_into_other_breed, r"label 2 has images in both n02085621-Breed_1/ and n02085620-Breed_0/"),
])
def test_dogs_broken_lists(tmp_path, edit, message):
    root = layouts.write_dogs(tmp_path / "dogs", 120)
    edit(root)
    with pytest.raises(DatasetError, match=message):
        open_dataset(get_card("dogs"), tmp_path)


# --- Stanford Cars -------------------------------------------------------------------------------

@pytest.mark.parametrize("where, in_devkit, nested", [
    ("stanford_cars", False, False),   # torchvision's StanfordCars layout (test mat at the root)
    ("car", True, False),              # RAMS-Trans reads the test mat from devkit/
    ("cars", False, True),             # Kaggle's copy nests cars_train/cars_train/
])
def test_cars_devkit_structs_one_based_classes(tmp_path, where, in_devkit, nested):
    layouts.write_cars(tmp_path / where, 196, {"train": 2, "test": 1}, test_mat_in_devkit=in_devkit,
                       nested_images=nested)
    data = open_dataset(get_card("cars"), tmp_path)
    assert data.format == "cars" and (len(data.train), len(data.test)) == (392, 196)
    assert sorted(set(data.test.labels)) == list(range(196))  # struct `class` 1..196 -> 0..195
    assert data.class_names[195] == "Make Model 195 2012"
    assert data.test.source.endswith("cars_test_annos_withlabels.mat")
    assert_paired(data.train)
    assert_paired(data.test)


def _unlabelled_test_only(root):
    (root / "cars_test_annos_withlabels.mat").unlink()


def _meta_short(root):
    from scipy.io import savemat

    savemat(root / "devkit" / "cars_meta.mat", {"class_names": np.array(["a", "b"], dtype=object).reshape(1, -1)})


def _class_197(root):
    from scipy.io import savemat

    savemat(root / "cars_test_annos_withlabels.mat", {"annotations": layouts.cars_annotations([("x.jpg", 196)])})


def _no_class_field(root):
    from scipy.io import savemat

    savemat(root / "devkit" / "cars_train_annos.mat",
            {"annotations": layouts.cars_annotations([("x.jpg", 0)], with_class=False)})


@pytest.mark.parametrize("edit, message", [
    (_unlabelled_test_only, r"missing \S+cars_test_annos_withlabels.mat \(devkit/cars_test_annos.mat has no labels\)"),
    (_meta_short, r"cars_meta.mat lists 2 class names but the card says 196"),
    (_class_197, r"annotations\[0\].class: label 197 is out of range 1\.\.196"),
    (_no_class_field, r"the 'annotations' structs have no field 'class'"),
])
def test_cars_broken_devkit(tmp_path, edit, message):
    root = layouts.write_cars(tmp_path / "cars", 196)
    edit(root)
    with pytest.raises(DatasetError, match=message):
        open_dataset(get_card("cars"), tmp_path)


def test_cars_imagefolder_repackaging_is_detected(tmp_path):
    layouts.write_imagefolder(tmp_path / "car_data" / "car_data", 196, {"train": 1, "test": 1})
    data = open_dataset(get_card("cars"), tmp_path)
    assert data.format == "imagefolder" and len(data.test) == 196 and "read as imagefolder" in data.notes[0]
    assert_paired(data.test)


# --- NABirds -------------------------------------------------------------------------------------

def test_nabirds_sparse_leaf_ids_map_to_0_554_in_ascending_id_order(tmp_path):
    layouts.write_nabirds(tmp_path / "nabirds", 555, {"train": 2, "test": 1})
    data = open_dataset(get_card("nabirds"), tmp_path)
    assert data.format == "nabirds" and (len(data.train), len(data.test)) == (1110, 555)
    leaves = layouts.nabirds_class_ids(555)
    assert leaves != list(range(295, 850))
    assert data.class_names[:2] == [f"Bird class {leaves[0]}", f"Bird class {leaves[1]}"]
    # the fixture's colour encodes the position of the image's id among the sorted leaf ids
    assert_paired(data.train)
    assert_paired(data.test)
    # items follow images.txt's line order (the fixture shuffles it), not the id order
    listed = [line.split()[1] for line in (tmp_path / "nabirds" / "images.txt").read_text().splitlines()]
    assert [key for key, _ in data.test.items] == [p for p in listed if p in dict(data.test.items)]


def _inner_node_label(root):
    """Label one image with taxonomy node 2, a parent of leaves in hierarchy.txt."""
    labels = root / "image_class_labels.txt"
    lines = labels.read_text().splitlines()
    lines[0] = f"{lines[0].split()[0]} 2"
    labels.write_text("\n".join(lines) + "\n")


def _drop_class(root):
    gone = f"{layouts.nabirds_class_ids(555)[-1]:04d}/"
    ids = {line.split()[0] for line in (root / "images.txt").read_text().splitlines() if gone in line}
    for name in ("images.txt", "image_class_labels.txt", "train_test_split.txt"):
        path = root / name
        path.write_text("".join(line + "\n" for line in path.read_text().splitlines() if line.split()[0] not in ids))


@pytest.mark.parametrize("edit, message", [
    (_inner_node_label, r"image_class_labels.txt:\d+: class id 2 is an inner node of \S+hierarchy.txt"),
    (_drop_class, r"labels images with 554 distinct class ids but the card says 555 leaf classes"),
    (lambda r: (r / "classes.txt").write_text("0 Birds\n"), r"classes.txt has no name for class id\(s\) 295"),
    (lambda r: (r / "train_test_split.txt").unlink(), r"missing \S+train_test_split.txt"),
])
def test_nabirds_broken_index_files(tmp_path, edit, message):
    root = layouts.write_nabirds(tmp_path / "nabirds", 555)
    edit(root)
    with pytest.raises(DatasetError, match=message):
        open_dataset(get_card("nabirds"), tmp_path)


# --- iNaturalist 2017 ----------------------------------------------------------------------------

def test_inat_coco_json_nested_folders_val_is_the_test_split(tmp_path):
    layouts.write_inat(tmp_path / "iNat2017", 5089, test_classes=40)
    data = open_dataset(get_card("inat"), tmp_path)
    assert data.format == "inat" and set(data.splits) == {"train", "test"}
    assert (len(data.train), len(data.test)) == (5089, 40) and data.test.source.endswith("val2017.json")
    assert data.train.labels == list(range(5089))  # 0-based category ids, joined on image_id (fixture reverses them)
    assert data.test.items[3][0] == "train_val_images/Reptilia/Species_3/00013e5.jpg"
    assert data.class_names[5088] == "Species 5088"
    assert_paired(data.test)


def _edit_json(name, change):
    def edit(root):
        path = root / name
        data = json.loads(path.read_text())
        change(data)
        path.write_text(json.dumps(data))
    return edit


@pytest.mark.parametrize("edit, message", [
    (_edit_json("val2017.json", lambda d: d["annotations"].append(dict(d["annotations"][0]))),
     r"val2017.json: annotations\[10\]: image \d+ has a second annotation \(first: annotations\[0\]\)"),
    (_edit_json("val2017.json", lambda d: d["annotations"].pop(0)),
     r"val2017.json: images\[9\] \(id \d+\) has no annotation"),
    (_edit_json("train2017.json", lambda d: d["annotations"][0].update(category_id=5089)),
     r"train2017.json: annotations\[0\]: label 5089 is out of range 0\.\.5088"),
    (_edit_json("train2017.json", lambda d: d["categories"].pop()), r"lists 5088 categories but the card says 5089"),
    (_edit_json("train2017.json", lambda d: d["images"][0].pop("file_name")), r"images\[0\]: expected 'file_name'"),
    (lambda r: (r / "val2017.json").write_text("{"), r"val2017.json is not valid JSON"),
    (lambda r: (r / "val2017.json").unlink(), r"missing \S+val2017.json"),
])
def test_inat_broken_annotations(tmp_path, edit, message):
    root = layouts.write_inat(tmp_path / "inat2017", 5089, test_classes=10, train_classes=20)
    edit(root)
    with pytest.raises(DatasetError, match=message):
        open_dataset(get_card("inat2017"), tmp_path)


# --- bench.py data, a tiny run, the report's paper column ----------------------------------------

@pytest.fixture(scope="module")
def fgvc_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("fgvc")
    layouts.write_dogs(root / "StanfordDogs", 120)
    layouts.write_cars(root / "stanford_cars", 196)
    layouts.write_nabirds(root / "nabirds", 555)
    layouts.write_inat(root / "inat2017", 5089, test_classes=32)
    return root


def test_bench_data_verifies_the_four_layouts(fgvc_root, capsys):
    assert main(["data", "--datasets", "dogs,cars,nabirds,inat", "--data-root", str(fgvc_root), "--json",
                 "--no-decode"]) == 0
    reports = {r["name"]: r for r in json.loads(capsys.readouterr().out)["datasets"]}
    assert {n: (r["format"], r["ok"], r["splits"]["train"]["classes_seen"]) for n, r in reports.items()} == {
        "dogs": ("dogs", True, 120), "cars": ("cars", True, 196), "nabirds": ("nabirds", True, 555),
        "inat2017": ("inat", True, 5089)}
    assert reports["nabirds"]["splits"]["test"]["label_max"] == 554
    assert "dogs: the train split has 120 images; the card expects 12000" in reports["dogs"]["warnings"]


WRITERS = {"dogs": lambda r: layouts.write_dogs(r / "StanfordDogs"),
           "cars": lambda r: layouts.write_cars(r / "stanford_cars"),
           "nabirds": lambda r: layouts.write_nabirds(r / "nabirds"),
           "inat2017": lambda r: layouts.write_inat(r / "inat2017", train_classes=4, test_classes=4)}


@pytest.mark.parametrize("name, break_it, message", [
    ("dogs", lambda r: (r / "StanfordDogs" / "Images" / "n02085625-Breed_5" / "n02085625_125.jpg").unlink(),
     r"dogs: 1 of 120 images listed in \S+test_list.mat are missing under \S+Images, e.g. n02085625-Breed_5/"),
    ("dogs", lambda r: shutil.rmtree(r / "StanfordDogs" / "Images" / "n02085739-Breed_119"),
     r"dogs: 1 of 120 images listed in \S+train_list.mat are missing"),
    ("cars", lambda r: (r / "stanford_cars" / "cars_test_annos_withlabels.mat").unlink(),
     r"cars: missing \S+cars_test_annos_withlabels.mat"),
    ("nabirds", lambda r: (r / "nabirds" / "hierarchy.txt").write_text(
        "".join(f"{c} 1\n" for c in layouts.nabirds_class_ids(555)[:3]) + "296 295\n"),
     r"nabirds: \S+image_class_labels.txt:\d+: class id 295 is an inner node"),
    ("inat2017", lambda r: (r / "inat2017" / "train2017.json").write_text('{"images": []}'),
     r"inat2017: \S+train2017.json: expected a JSON object with 'images' and 'annotations' lists"),
    ("inat2017", lambda r: None, r"inat2017: the train split has images of 4 classes but the card says 5089"),
])
def test_bench_data_broken_layout_is_one_line_exit_2(tmp_path, capsys, name, break_it, message):
    WRITERS[name](tmp_path)
    break_it(tmp_path)
    line = one_line_exit_2(capsys, ["data", "--datasets", name, "--data-root", str(tmp_path), "--no-decode"])
    assert re.search(message, line), line


def test_tiny_run_on_every_layout_then_the_report_quotes_the_papers(fgvc_root, tmp_path, capsys, single_thread):
    results = tmp_path / "results"
    # the runner collects garbage around every cell; with the test session's objects frozen out of
    # the collector each collection takes milliseconds instead of half a second
    gc.freeze()
    try:
        status = main(["--methods", "vit,ffvt", "--datasets", "dogs,cars,nabirds,inat2017", "--preset", "tiny",
                       "--data-root", str(fgvc_root), "--results-dir", str(results), "--cache-dir",
                       str(tmp_path / "cache"), "--steps", "2", "--eval-every", "2", "--warmup-steps", "1",
                       "--batch-size", "8", "--img-size", "32", "--resize-size", "36", "--opt", "ffvt.num_tokens=4",
                       "--no-progress"])
    finally:
        gc.unfreeze()
    assert status == 0, capsys.readouterr().err[-3000:]
    records = [json.loads(p.read_text()) for p in (results / "runs").rglob("*.json")]
    cells = {(r["method"], r["dataset"]): r for r in records}
    assert set(cells) == {(m, d) for m in ("vit", "ffvt") for d in ("dogs", "cars", "nabirds", "inat2017")}
    for record in records:
        assert record["status"] == "ok", record.get("error")
        assert record["accuracy"]["n_evaluated"] == record["data"]["n_test"]
    assert cells[("vit", "inat2017")]["data"]["n_test"] == 32 and cells[("ffvt", "nabirds")]["data"]["n_test"] == 555
    capsys.readouterr()
    assert main(["report", "--results-dir", str(results)]) == 0
    board = pd.read_csv(results / "leaderboard.csv")
    paper = {(m, d): v for m, d, v in zip(board["method"], board["dataset"], board["paper_top1"])}
    # every (method, dataset) the papers publish has its number beside ours
    assert paper[("vit", "dogs")] == pytest.approx(91.7) and paper[("ffvt", "dogs")] == pytest.approx(91.5)
    assert paper[("vit", "inat2017")] == pytest.approx(68.7) and paper[("vit", "nabirds")] == pytest.approx(89.9)
    unpublished = {("ffvt", "cars"), ("ffvt", "nabirds"), ("ffvt", "inat2017")}  # FFVT reports none of them
    assert {pair for pair, value in paper.items() if value != value} == unpublished
    # in the page each published number opens its source
    page = (results / "index.html").read_text()
    urls = {(m, d): u for m, d, u in zip(board["method"], board["dataset"], board["paper_url"])}
    assert urls[("ffvt", "dogs")].startswith("https://") and f'<a href="{urls[("ffvt", "dogs")]}">' in page


def test_bench_list_shows_the_cards(capsys):
    assert main(["list"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    for name, fmt, classes in (("dogs", "dogs", "120"), ("cars", "cars", "196"), ("nabirds", "nabirds", "555"),
                               ("inat2017", "inat", "5089")):
        assert f" {fmt} " in rows[name] and f" {classes} " in rows[name], rows[name]
    assert "stanford_dogs" in rows["dogs"] and "stanford_cars" in rows["cars"] and "inat," in rows["inat2017"]
