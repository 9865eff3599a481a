"""`--pretrained PATH` on the run command: cell ids, records, one-line errors, the warning."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from bench.cli import main
from bench.driver import RANDOM_INIT_WARNING
from conftest import run_bench
from google_layout import vit_arrays, write_npz
from methods.pretrained import file_sha256

TINY_PRESET = dict(patch=8, dim=64, depth=4, heads=4)  # bench/presets.py "tiny"


@pytest.fixture
def tiny_preset_npz(tmp_path):
    return write_npz(tmp_path / "ViT-tiny.npz", vit_arrays(np.random.default_rng(0), grid=4, **TINY_PRESET))


def cell_ids(stdout: str) -> list[str]:
    return [line.split()[0] for line in stdout.splitlines() if " pending " in line or " done " in line]


def dry_run(capsys, args, *more) -> tuple[int, str, str]:
    """`bench.py ARGS --dry-run` in this process (no accelerator is created)."""
    status = main([*args, "--dry-run", *more])
    out = capsys.readouterr()
    return status, out.out, out.err


def test_bad_pretrained_paths_are_one_line_errors(tmp_path, capsys, fast_run_args, tiny_preset_npz):
    status, _, err = dry_run(capsys, fast_run_args, "--pretrained", str(tmp_path / "nope.npz"))
    assert status == 2
    assert err.strip().splitlines() == [
        f"bench.py: error: --pretrained {tmp_path / 'nope.npz'}: no such file; give a local .npz, .pth or "
        f".safetensors checkpoint"]
    shallow = write_npz(tmp_path / "depth2.npz", vit_arrays(np.random.default_rng(0), grid=4,
                                                            **{**TINY_PRESET, "depth": 2}))
    mismatch = run_bench(*fast_run_args, "--pretrained", str(shallow))
    assert mismatch.returncode == 2
    lines = mismatch.stderr.strip().splitlines()
    assert len(lines) == 1 and "'blocks.2.norm1.weight'" in lines[0] and "depth2.npz" in lines[0]


def test_cell_ids_follow_the_file_content_and_random_init_warns(tmp_path, capsys, fast_run_args, tiny_preset_npz):
    status, plain, err = dry_run(capsys, fast_run_args)
    assert status == 0 and err.splitlines() == [RANDOM_INIT_WARNING]
    status, first, err = dry_run(capsys, fast_run_args, "--pretrained", str(tiny_preset_npz))
    assert status == 0 and err == ""
    _, moved, _ = dry_run(capsys, fast_run_args, "--pretrained", str(shutil.copy(tiny_preset_npz, tmp_path / "b.npz")))
    assert len(cell_ids(first)) == 1 and cell_ids(first) == cell_ids(moved) != cell_ids(plain)
    other = write_npz(tmp_path / "c.npz", vit_arrays(np.random.default_rng(1), grid=4, **TINY_PRESET))
    assert cell_ids(dry_run(capsys, fast_run_args, "--pretrained", str(other))[1]) != cell_ids(first)


def test_a_run_records_the_weights_it_started_from(tmp_path, fast_run_args, tiny_preset_npz):
    result = run_bench(*fast_run_args, "--steps", "2", "--eval-every", "2", "--pretrained", str(tiny_preset_npz))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "pretrained ViT-tiny.npz" in result.stdout and "pos_embed grid: 4x4 -> 8x8 (bilinear)" in result.stdout
    (record_path,) = (tmp_path / "results").rglob("*.json")
    record = json.loads(record_path.read_text())
    assert record["status"] == "ok"
    assert record["pretrained"] == {"path": str(tiny_preset_npz.resolve()), "sha256": file_sha256(tiny_preset_npz)}
    (load,) = record["pretrained_loads"]
    assert load["sha256"] == file_sha256(tiny_preset_npz) and "blocks.3.mlp.fc2.weight" in load["loaded"]
    assert load["initialised"] == ["head.weight", "head.bias"] and "head/kernel" in load["skipped"]
