"""`--log-with`: one tracker run per cell, read back with each library's own reader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import trackers
from bench.cli import main


def records_in(results: Path) -> list[dict]:
    return sorted((json.loads(p.read_text()) for p in (results / "runs").rglob("*.json")), key=lambda r: r["seed"])


def tensorboard_scalars(run_dir: Path) -> dict[str, dict[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}


@pytest.mark.parametrize("names", ["tensorboard,mlflow"])
def test_tensorboard_and_mlflow_hold_the_records_curve(fast_run_args, tmp_path, monkeypatch, names):
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # restored afterwards
    results = tmp_path / "results"
    assert main([*fast_run_args, "--methods", "vit", "--seeds", "0,1", "--log-with", names]) == 0
    recs = records_in(results)
    assert len(recs) == 2

    client = MlflowClient(tracking_uri=(results / "mlruns").resolve().as_uri())
    (experiment,) = [e for e in client.search_experiments() if e.name == trackers.PROJECT]
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert len(runs) == 2  # one run per cell
    for record in recs:
        name = f"vit/demo/seed{record['seed']}/{record['cell_id']}"
        curve = record["accuracy"]["curve"]
        last = curve[-1]
        assert [p["step"] for p in curve] == [2, 4]

        scalars = tensorboard_scalars(results / "tb" / name)
        assert scalars["test/top1"] == pytest.approx({p["step"]: p["top1"] for p in curve}, rel=1e-6)
        assert scalars["test/top5"] == pytest.approx({p["step"]: p["top5"] for p in curve}, rel=1e-6)
        assert scalars["test/loss"] == pytest.approx({p["step"]: p["loss"] for p in curve}, rel=1e-6)
        assert scalars["train/loss"] == pytest.approx({4: sum(last["train_losses"].values())}, rel=1e-6)
        assert scalars["final/top1_last"] == pytest.approx({4: record["accuracy"]["top1_last"]}, rel=1e-6)
        assert scalars["final/train_samples_per_sec"][4] == pytest.approx(record["speed"]["train_samples_per_sec"],
                                                                          rel=1e-6)

        run = runs[name]
        history = {key: {m.step: m.value for m in client.get_metric_history(run.info.run_id, key)}
                   for key in ("test/top1", "test/loss", "train/loss", "train/lr")}
        assert history["test/top1"] == {p["step"]: p["top1"] for p in curve}  # float64: exact
        assert history["test/loss"] == {p["step"]: p["loss"] for p in curve}
        assert history["train/loss"] == {4: sum(last["train_losses"].values())}
        assert set(history["train/lr"]) == {4}
        assert run.data.metrics["final/top1_last"] == record["accuracy"]["top1_last"]
        assert run.data.metrics["final/peak_rss_mb_max"] == record["memory"]["peak_rss_mb_max"]
        assert run.data.tags["status"] == "ok" and run.info.status == "FINISHED"
        assert run.data.params["recipe.lr"] == str(record["recipe"]["lr"])
        assert run.data.params["cell_id"] == record["cell_id"]


def test_a_missing_tracker_package_is_one_line_naming_the_extra(fast_run_args, monkeypatch, capsys):
    monkeypatch.setattr(trackers, "_installed", lambda name: name != "mlflow")
    assert main([*fast_run_args, "--log-with", "tensorboard,mlflow"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "mlflow" in err[0] and "pip install 'fgbench[trackers]'" in err[0]
    monkeypatch.setattr(trackers, "_installed", lambda name: False)
    assert main([*fast_run_args, "--log-with", "all"]) == 2
    assert "fgbench[trackers]" in capsys.readouterr().err


def test_unknown_tracker_and_all(monkeypatch):
    with pytest.raises(trackers.UsageError, match="unknown tracker 'tensorbord'"):
        trackers.parse_log_with("tensorbord")
    monkeypatch.setattr(trackers, "_installed", lambda name: name in ("mlflow", "tensorboard"))
    assert trackers.parse_log_with("all") == ["tensorboard", "mlflow"]
    assert trackers.parse_log_with("mlflow,tensorboard,mlflow") == ["mlflow", "tensorboard"]
    assert trackers.parse_log_with(None) == []


def wandb_offline_records(path: Path):
    """The protobuf records of a W&B offline run file (a LevelDB-style log: 7-byte header, 32 KiB blocks of
    `crc32c, length, kind` framed chunks)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    block, pos, pending = 32768, 7, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        if left < 7 or (length == 0 and kind == 0):  # block trailer or padding
            pos += left
            continue
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record
            pending = b""


def test_wandb_runs_offline_and_holds_the_records_curve(fast_run_args, tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="wandb is part of the trackers extra")
    for key in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_PROJECT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    results = tmp_path / "results"
    assert main([*fast_run_args, "--methods", "vit", "--log-with", "wandb"]) == 0
    (record,) = records_in(results)
    (run_file,) = (results / "wandb").glob("offline-run-*/run-*.wandb")
    history: dict[int, dict] = {}
    summary, config, runs = {}, {}, []
    for item in wandb_offline_records(run_file):
        kind = item.WhichOneof("record_type")
        if kind == "run":
            runs.append(item.run)
        elif kind == "history":
            values = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in item.history.item}
            history.setdefault(values["_step"], {}).update(values)
        elif kind == "config":
            config.update({i.key: json.loads(i.value_json) for i in item.config.update})
        elif kind == "summary":
            summary.update({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in item.summary.update})
    (run,) = runs
    assert run.display_name == f"vit/demo/seed0/{record['cell_id']}" and run.project == trackers.PROJECT
    assert config["recipe.lr"] == record["recipe"]["lr"] and config["cell_id"] == record["cell_id"]
    curve = record["accuracy"]["curve"]
    assert {step: row["test/top1"] for step, row in history.items()} == {p["step"]: p["top1"] for p in curve}
    assert history[4]["train/loss"] == sum(curve[-1]["train_losses"].values())
    assert history[4]["final/top1_last"] == record["accuracy"]["top1_last"]
    assert summary["status"] == "ok"
