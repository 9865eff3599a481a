"""Readers: every layout users have on disk, parsed into 0-based labels paired with the right image."""

from __future__ import annotations

import shutil

import pytest

from tests import layouts
from bench.data import get_card, open_dataset
from bench.errors import DatasetError, UsageError


def assert_paired(split):
    """Every item decodes to RGB and its colour encodes the item's label (the right file got the right label)."""
    for index, (_, label) in enumerate(split.items):
        img = split.open(index)
        assert img.mode == "RGB" and img.size == layouts.SIZE
        assert layouts.pixel(img)[0] == label * 3 % 256


# --- UFG ---------------------------------------------------------------------------------------

def test_ufg_crlf_blank_lines_spaces_and_one_based_labels(tmp_path):
    layouts.write_ufg(tmp_path / "cotton", 80, {"train": 2, "test": 1}, crlf=True, blank_lines=True, spaces=True)
    data = open_dataset(get_card("cotton"), tmp_path)
    assert (len(data.train), len(data.test)) == (160, 80)
    assert sorted(set(data.train.labels)) == list(range(80))  # file labels 1..80 -> 0..79
    assert any(" " in key for key, _ in data.train.items)
    assert_paired(data.test)


def test_ufg_zero_based_file_is_refused_unless_told(tmp_path):
    layouts.write_ufg(tmp_path / "cotton", 80, base=0)
    with pytest.raises(DatasetError, match=r"looks 0-based.*label_offset=0"):
        open_dataset(get_card("cotton"), tmp_path)
    data = open_dataset(get_card("cotton"), tmp_path, {"label_offset": 0})
    assert min(data.train.labels) == 0 and max(data.train.labels) == 79
    assert_paired(data.train)


def test_ufg_label_out_of_range(tmp_path):
    root = layouts.write_ufg(tmp_path / "cotton", 80)
    anno = root / "anno" / "test.txt"
    anno.write_text(anno.read_text().replace("c079/test_0.png 80", "c079/test_0.png 81"))
    with pytest.raises(DatasetError, match=r"test.txt:80: label 81 is out of range 1\.\.80"):
        open_dataset(get_card("cotton"), tmp_path)


@pytest.mark.parametrize("broken, message", [
    ("missing", r"missing .*anno/test.txt"),
    ("empty", r"lists no images \(empty split\)"),
    ("garbled", r"train.txt:1: label 'x' is not an integer"),
])
def test_ufg_broken_anno_files(tmp_path, broken, message):
    root = layouts.write_ufg(tmp_path / "cotton", 80)
    if broken == "missing":
        (root / "anno" / "test.txt").unlink()
    elif broken == "empty":
        (root / "anno" / "test.txt").write_text("\n\r\n")
    else:
        (root / "anno" / "train.txt").write_text("c000/train_0.png x\n")
    with pytest.raises(DatasetError, match=message):
        open_dataset(get_card("cotton"), tmp_path)


def test_ufg_shipped_val_split(tmp_path):
    layouts.write_ufg(tmp_path / "cotton", 80, {"train": 1, "val": 1, "test": 1})
    data = open_dataset(get_card("cotton"), tmp_path)
    assert set(data.splits) == {"train", "val", "test"} and len(data.splits["val"]) == 80


@pytest.mark.parametrize("where, base", [
    ("cotton", "."),                  # data_root/<name>
    ("COTTON", "."),                  # an alias, as hibana2077's zip names it
    ("Cotton80", "."),                # an alias in another case
    ("Cotton80/COTTON", "."),         # one wrapper folder deeper
    ("x/my_copy", "x/my_copy"),       # --data-root is the dataset folder itself
])
def test_ufg_root_resolution(tmp_path, where, base):
    layouts.write_ufg(tmp_path / where, 80)
    data = open_dataset(get_card("cotton"), tmp_path / base)
    assert data.root == tmp_path / where and len(data.train) == 80


def test_ufg_data_path_may_be_the_folder_or_its_parent(tmp_path):
    layouts.write_ufg(tmp_path / "dl" / "anything" / "COTTON", 80)
    for path in (tmp_path / "dl" / "anything" / "COTTON", tmp_path / "dl" / "anything"):
        data = open_dataset(get_card("cotton"), tmp_path / "nowhere", {"path": str(path)})
        assert data.root == tmp_path / "dl" / "anything" / "COTTON"


def test_ufg_data_root_does_not_borrow_another_dataset(tmp_path):
    layouts.write_ufg(tmp_path / "soyloc", 200)
    with pytest.raises(DatasetError, match=r"dataset 'cotton' not found under --data-root"):
        open_dataset(get_card("cotton"), tmp_path)


@pytest.mark.parametrize("where", ["SoyAgeing-R1/R1", "soyageing/R1", "soybean_aging_R1", "R1"])
def test_soyageing_nested_archive_folders(tmp_path, where):
    layouts.write_ufg(tmp_path / where, 198)
    data = open_dataset(get_card("soyageing_r1"), tmp_path)
    assert data.root == tmp_path / where and len(data.test) == 198


# --- CUB ---------------------------------------------------------------------------------------

def test_cub_joins_index_files_on_image_id(tmp_path):
    layouts.write_cub(tmp_path / "CUB_200_2011", 200, {"train": 2, "test": 1}, shuffle=True)
    data = open_dataset(get_card("cub"), tmp_path)
    assert (len(data.train), len(data.test)) == (400, 200)
    assert data.class_names[0] == "001.Class_0" and len(data.class_names) == 200
    assert_paired(data.train)  # zipping the shuffled files by line position would pair wrong labels
    assert_paired(data.test)


@pytest.mark.parametrize("where, base", [("CUB_200_2011", "."), ("CUB", "."), ("CUB_200_2011/CUB_200_2011", "."),
                                         ("CUB_200_2011", "CUB_200_2011")])
def test_cub_root_is_the_folder_its_parent_or_a_wrapper(tmp_path, where, base):
    layouts.write_cub(tmp_path / where, 200)
    assert open_dataset(get_card("cub"), tmp_path / base).root == tmp_path / where


@pytest.mark.parametrize("edit, message", [
    (lambda r: (r / "image_class_labels.txt").write_text(
        "\n".join(l for l in (r / "image_class_labels.txt").read_text().splitlines() if not l.startswith("7 "))),
     r"image_class_labels.txt has no line for image id\(s\) 7"),
    (lambda r: (r / "classes.txt").write_text("1 a\n2 b\n"), r"lists 2 classes but the card says 200"),
    (lambda r: (r / "train_test_split.txt").write_text(
        (r / "train_test_split.txt").read_text().replace(" 0\n", " 1\n")), r"marks no image as test \(empty split\)"),
    (lambda r: (r / "train_test_split.txt").unlink(), r"missing .*train_test_split.txt"),
])
def test_cub_broken_index_files(tmp_path, edit, message):
    root = layouts.write_cub(tmp_path / "CUB_200_2011", 200)
    edit(root)
    with pytest.raises(DatasetError, match=message):
        open_dataset(get_card("cub"), tmp_path)


# --- ImageFolder -------------------------------------------------------------------------------

def test_imagefolder_val_is_the_test_split_without_test_folder(tmp_path):
    layouts.write_imagefolder(tmp_path / "birds", 200, {"train": 1, "val": 1})
    data = open_dataset(get_card("cub"), tmp_path, {"path": str(tmp_path / "birds"), "format": "imagefolder"})
    assert set(data.splits) == {"train", "test"} and len(data.test) == 200
    assert_paired(data.test)


def test_imagefolder_class_indices_come_from_all_splits(tmp_path):
    root = layouts.write_imagefolder(tmp_path / "birds", 200, {"train": 1, "val": 1, "test": 1})
    shutil.rmtree(root / "test" / "class_000")  # torchvision would index test's classes from 0 again
    (root / "train" / ".ipynb_checkpoints").mkdir()  # hidden folders are not classes
    data = open_dataset(get_card("cub"), tmp_path, {"path": str(root), "format": "imagefolder"})
    assert set(data.splits) == {"train", "val", "test"}
    assert min(data.test.labels) == 1 and len(data.test) == 199
    assert_paired(data.test)


def test_imagefolder_wrong_class_count(tmp_path):
    layouts.write_imagefolder(tmp_path / "birds", 199)
    with pytest.raises(DatasetError, match=r"199 class folders .* card says 200 classes \(wrong class count\)"):
        open_dataset(get_card("cub"), tmp_path, {"path": str(tmp_path / "birds"), "format": "imagefolder"})


def test_format_is_detected_when_the_cards_layout_is_absent(tmp_path):
    layouts.write_imagefolder(tmp_path / "CUB_200_2011", 200)
    data = open_dataset(get_card("cub"), tmp_path)
    assert data.format == "imagefolder" and "read as imagefolder" in data.notes[0]


def test_unknown_reader_option_is_a_usage_error(tmp_path):
    layouts.write_ufg(tmp_path / "cotton", 80)
    with pytest.raises(UsageError, match=r"unknown reader option 'label_column' for cotton \(ufg format\)"):
        open_dataset(get_card("cotton"), tmp_path, {"label_column": "y"})


# --- Hugging Face datasets ---------------------------------------------------------------------

@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


def test_hf_save_to_disk_with_image_feature_and_classlabel(tmp_path, hf_cache):
    layouts.write_hf_disk(tmp_path / "cub_hf", 200, {"train": 1, "val": 1, "test": 1})
    data = open_dataset(get_card("cub"), tmp_path, {"path": str(tmp_path / "cub_hf")})
    assert data.format == "hf" and set(data.splits) == {"train", "val", "test"}
    assert len(data.train) == 200 and data.class_names[5] == "class_005"
    assert_paired(data.train)
    assert_paired(data.splits["val"])


def test_hf_parquet_file_with_split_column_and_string_labels(tmp_path, hf_cache):
    path = layouts.write_parquet(tmp_path / "ufgvc" / "cotton80_dataset.parquet", 80, {"train": 1, "test": 1},
                                 string_labels=True)
    data = open_dataset(get_card("cotton"), tmp_path, {"path": str(path)})
    assert (len(data.train), len(data.test)) == (80, 80)
    assert data.class_names[:2] == ["name_000", "name_001"]
    assert_paired(data.test)


def test_hf_string_labels_map_over_the_full_label_set(tmp_path, hf_cache):
    import pyarrow.parquet as pq

    path = layouts.write_parquet(tmp_path / "c.parquet", 80, string_labels=True)
    table = pq.read_table(path)
    rows = zip(table["split"].to_pylist(), table["label"].to_pylist())
    keep = [not (split == "train" and label == "name_000") for split, label in rows]
    pq.write_table(table.filter(keep), path)  # train lacks class 0; test still has it
    data = open_dataset(get_card("cotton"), tmp_path, {"path": str(path)})
    assert min(data.train.labels) == 1 and min(data.test.labels) == 0  # one index per name over all splits
    assert_paired(data.train)


def test_hf_hub_snapshot_splits_from_file_names(tmp_path, hf_cache):
    for split in ("train", "test"):
        layouts.write_parquet(tmp_path / "snap" / "data" / f"{split}-00000-of-00001.parquet", 80, {split: 1},
                              split_column=None)
    data = open_dataset(get_card("cotton"), tmp_path, {"path": str(tmp_path / "snap")})
    assert (len(data.train), len(data.test)) == (80, 80)
    assert_paired(data.train)


def test_hf_integer_labels_one_based_need_the_offset(tmp_path, hf_cache):
    path = layouts.write_parquet(tmp_path / "c.parquet", 80, base=1)
    with pytest.raises(DatasetError, match=r"labels look 1-based: pass --data-opt cotton.label_offset=1"):
        open_dataset(get_card("cotton"), tmp_path, {"path": str(path)})
    data = open_dataset(get_card("cotton"), tmp_path, {"path": str(path), "label_offset": 1})
    assert_paired(data.test)


def test_hf_configurable_columns(tmp_path, hf_cache):
    import pyarrow.parquet as pq

    path = layouts.write_parquet(tmp_path / "c.parquet", 80)
    pq.write_table(pq.read_table(path).rename_columns(["png", "y", "part"]), path)
    with pytest.raises(DatasetError, match=r"no column 'image' .* --data-opt cotton.image_column=COLUMN"):
        open_dataset(get_card("cotton"), tmp_path, {"path": str(path)})
    data = open_dataset(get_card("cotton"), tmp_path, {"path": str(path), "image_column": "png", "label_column": "y",
                                                       "split_column": "part"})
    assert_paired(data.train)


def test_hf_damaged_parquet_is_a_dataset_error(tmp_path, hf_cache):
    (tmp_path / "c.parquet").write_bytes(b"PAR1 not really parquet")
    with pytest.raises(DatasetError, match=r"cotton: .*reading the parquet files failed"):
        open_dataset(get_card("cotton"), tmp_path, {"path": str(tmp_path / "c.parquet")})


def test_hf_image_column_of_relative_paths(tmp_path, hf_cache):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [(f"pics/{split}_{label}.png", label, split, index)
            for index, (split, label) in enumerate((s, c) for s in ("train", "test") for c in range(80))]
    for rel, label, _, index in rows:
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        layouts.image(label, index).save(tmp_path / rel)
    pq.write_table(pa.table({"image": [r[0] for r in rows], "label": [r[1] for r in rows],
                             "split": [r[2] for r in rows]}), tmp_path / "index.parquet")
    data = open_dataset(get_card("cotton"), tmp_path, {"path": str(tmp_path), "format": "hf"})
    assert_paired(data.test)


def test_reader_options_layer_card_blocks_under_the_command_line():
    from pathlib import Path

    from bench.data.cards import DatasetCard
    from bench.data.readers import get_reader, reader_options

    card = DatasetCard(name="x", title="x", format="ufg", num_classes=3, path=Path("x.yaml"),
                       reader={"label_offset": 0, "hf": {"label_column": "y", "label_offset": 1}})
    assert reader_options(card, get_reader("ufg"), {}) == {"label_offset": 0}
    hf = reader_options(card, get_reader("hf"), {"image_column": "png", "path": "/somewhere"})
    assert (hf["label_column"], hf["label_offset"], hf["image_column"]) == ("y", 1, "png")  # flat keys are ufg's
    with pytest.raises(UsageError, match=r"reader option 'label_offset' \(--data-opt x.KEY\) must be int"):
        reader_options(card, get_reader("ufg"), {"label_offset": "one"})
