"""`--save-model` artifacts and `bench.py eval`: the re-evaluation reproduces the record exactly."""

from __future__ import annotations

import json
import shutil

import pytest

from bench import records
from bench.cli import main
from bench.models import META, WEIGHTS, iter_models


@pytest.fixture
def saved_run(fast_run_args, tmp_path, single_thread):
    """One tiny trained cell with its model kept."""
    assert main(fast_run_args + ["--methods", "vit", "--seeds", "0", "--save-model"]) == 0
    results = tmp_path / "results"
    (path, record), = records.iter_records(results)
    return results, path, record


def test_save_model_writes_weights_and_description_named_in_the_record(saved_run):
    results, path, record = saved_run
    block = record["saved_model"]
    folder = results / block["path"]
    assert block["path"] == f"models/{record['cell_id']}"
    assert (folder / WEIGHTS).stat().st_size == block["bytes"]
    meta = json.loads((folder / META).read_text())
    assert meta["cell_id"] == record["cell_id"] and meta["method"] == "vit" and meta["dataset"] == "demo"
    assert meta["record"] == path.relative_to(results).as_posix()
    assert meta["num_classes"] == 12 and meta["precision"] == "no" and meta["seed"] == 0
    assert meta["backbone"]["img_size"] == record["img_size"] and meta["options"] == record["options"]
    assert not list(folder.glob(".*.tmp"))
    (model,) = iter_models(results)
    assert model.meta == meta


def test_eval_reproduces_the_last_step_top1_exactly(saved_run, fast_run_args, tmp_path, capsys):
    results, _, record = saved_run
    folder = results / record["saved_model"]["path"]
    data_root = fast_run_args[fast_run_args.index("--data-root") + 1]
    assert main(["eval", "--model", str(folder), "--datasets", "demo", "--data-root", data_root,
                 "--results-dir", str(results), "--cache-dir", str(tmp_path / "cache")]) == 0
    assert "identical" in capsys.readouterr().out
    (evaluated,) = (results / "evals").rglob("*.json")
    ev = json.loads(evaluated.read_text())
    assert ev["accuracy"]["top1"] == record["accuracy"]["top1_last"]
    assert ev["accuracy"]["classes"] == record["accuracy"]["classes"]
    assert ev["training_record"]["identical"] is True
    assert ev["accuracy"]["n_evaluated"] == record["accuracy"]["n_test"]
    # the same through the results folder (--methods) and without the cache
    assert main(["eval", "--methods", "vit", "--data-root", data_root, "--results-dir", str(results),
                 "--no-cache"]) == 0
    assert "identical" in capsys.readouterr().out


def test_eval_refuses_a_class_count_or_geometry_mismatch(saved_run, fast_run_args, tmp_path, capsys):
    results, _, record = saved_run
    data_root = fast_run_args[fast_run_args.index("--data-root") + 1]
    folder = results / record["saved_model"]["path"]
    base = ["eval", "--data-root", data_root, "--results-dir", str(results), "--no-cache"]
    assert main(base + ["--model", str(folder), "--img-size", str(record["img_size"] * 2)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"trained at {record['img_size']} px" in err
    other = tmp_path / "other"
    shutil.copytree(folder, other)
    meta = json.loads((other / META).read_text())
    meta["num_classes"] = 7
    (other / META).write_text(json.dumps(meta))
    assert main(base + ["--model", str(other), "--datasets", "demo"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "demo has 12 classes" in err and "predicts 7" in err
    assert main(base + ["--model", str(tmp_path / "nowhere")]) == 2
    assert "--save-model" in capsys.readouterr().err
    assert main(base + ["--model", str(folder), "--workers", "-1"]) == 2
    assert "--workers must be >= 0" in capsys.readouterr().err


def test_explain_draws_the_saved_model_and_the_report_shows_the_gallery(saved_run, fast_run_args, capsys):
    from bench.report import write_report
    from bench.report.gallery import read_manifest

    results, _, record = saved_run
    data_root = fast_run_args[fast_run_args.index("--data-root") + 1]
    base = ["explain", "--data-root", data_root, "--results-dir", str(results)]
    assert main(base + ["--methods", "vit", "--images", "1"]) == 2
    assert "--images must be >= 2" in capsys.readouterr().err
    assert main(base + ["--methods", "vit", "--images", "3"]) == 0
    figures = read_manifest(results)
    assert [f["image"] for f in figures] == [0, 120, 239]  # spread over the 240 test images
    assert {f["kind"] for f in figures} == {"rollout"} and {f["cell_id"] for f in figures} == {record["cell_id"]}
    assert all((results / f["file"]).read_bytes()[:4] == b"\x89PNG" for f in figures)
    assert main(base + ["--methods", "vit", "--images", "3"]) == 0  # again: replaced, not appended
    assert len(read_manifest(results)) == 3
    write_report(results)
    page = (results / "index.html").read_text()
    gallery = page[page.index('<section id="gallery">'):]
    assert gallery.count("<img ") == 3 and all(f'src="{f["file"]}"' in gallery for f in figures)
    assert main(base + ["--methods", "ffvt"]) == 2
    assert "no saved model" in capsys.readouterr().err


@pytest.mark.slow
def test_eval_under_accelerate_launch_shards_and_still_reproduces(saved_run, fast_run_args):
    """Two ranks, an eval batch that does not divide the 240 test images: the padding is dropped, the
    count is exact and the top-1 is the record's."""
    from test_scale_out import launch

    results, _, record = saved_run
    data_root = fast_run_args[fast_run_args.index("--data-root") + 1]
    done = launch(["eval", "--model", str(results / record["saved_model"]["path"]), "--data-root", data_root,
                   "--results-dir", str(results), "--no-cache", "--eval-batch-size", "7"], nproc=2)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("identical") == 1 and "over 240" in done.stdout
