"""`bench.py speed` end to end on a CPU: files and schema, eager/fused side by side, --with-data, bad input."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from bench.cli import main
from bench.speed.output import CSV_COLUMNS

SMALL = ["--preset", "tiny", "--device", "cpu", "--img-size", "32", "--batch-size", "4", "--warmup", "1",
         "--steps", "2", "--flop-counter", "torch"]


def test_speed_writes_the_csv_and_prints_the_table_last(tmp_path, capsys, single_thread):
    status = main(["speed", "--methods", "vit", *SMALL, "--peak-tflops", "0.5", "--results-dir", str(tmp_path)])
    out = capsys.readouterr()
    assert status == 0, out.err
    torch_tag = "".join(torch.__version__.split("+")[0].split("."))
    csv = tmp_path / f"speed-tiny-fp32-pt{torch_tag}-cpu.csv"
    assert csv.is_file() and csv.with_suffix(".json").is_file() and csv.with_suffix(".md").is_file()
    frame = pd.read_csv(csv)
    assert list(frame.columns) == list(CSV_COLUMNS)
    assert list(frame.attention) == ["eager", "fused"]
    eager, fused = frame.iloc[0], frame.iloc[1]
    assert fused.train_speedup_vs_eager == pytest.approx(fused.train_samples_per_sec / eager.train_samples_per_sec)
    assert fused.train_mfu == pytest.approx(6e9 * fused.train_gmacs * fused.train_samples_per_sec / 0.5e12)
    assert fused.flop_counter.startswith("torch ") and fused.flop_counter.endswith("FlopCounterMode")
    assert (frame.train_timed_steps == 2).all() and (frame.train_batch_size == 4).all()
    assert frame.error.isna().all()
    last = out.out.strip().splitlines()
    assert last[-1].startswith("| vit ") and "fused" in last[-1]
    assert any(line.startswith("| method") and "fused/eager train" in line for line in last[-4:])


def test_with_data_reports_the_loader_to_synthetic_ratio(demo_root, tmp_path, single_thread):
    status = main(["speed", "--methods", "vit", "--attention", "fused", *SMALL, "--with-data", "demo",
                   "--data-root", str(demo_root), "--cache-dir", str(tmp_path / "cache"),
                   "--results-dir", str(tmp_path / "out")])
    assert status == 0
    [csv] = (tmp_path / "out").glob("*.csv")
    row = pd.read_csv(csv).iloc[0]
    assert row.dataset == "demo" and row.data_workers == 0
    assert row.data_ratio == pytest.approx(row.data_samples_per_sec / row.train_samples_per_sec)
    assert any((tmp_path / "cache").glob("demo-train-r*.npy"))  # fed through the decode-and-resize cache


@pytest.mark.parametrize("flags, expected", [
    (["--attention", "slow"], "--attention takes fused, eager"),
    (["--opt", "attention=eager"], "use --attention"),
    (["--compile", "maybe"], "--compile takes off, on"),
    (["--img-size", "30"], "not a multiple of the patch size"),
    (["--batch-size", "0"], "positive integers"),
    (["--warmup", "0"], "--warmup and --steps must be >= 1"),
    (["--with-data", "nosuch"], "nosuch"),
    (["--methods", "nosuch"], "unknown method"),
    (["--interleave", "some"], "--interleave must be one of off, modes, all"),
    (["--clock", "sundial"], "--clock must be one of auto, thread, wall"),
])
def test_bad_input_is_one_line_and_status_2(flags, expected, capsys, tmp_path):
    args = ["speed", "--device", "cpu", "--results-dir", str(tmp_path), *flags]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bench.py: error:") and expected in err[0]
    assert not any(tmp_path.iterdir())
