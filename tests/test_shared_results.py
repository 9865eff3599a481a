"""Everything a run or a report writes honours the umask, so a group can share a results dir."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from bench.atomic import atomic_write_text


@pytest.fixture(params=[0o022, 0o002], ids=["umask022", "umask002"])
def umask(request):
    before = os.umask(request.param)
    yield request.param
    os.umask(before)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def modes_under(root: Path) -> dict[str, set[str]]:
    """Octal mode -> paths (relative), for every file and folder under `root`."""
    found: dict[str, set[str]] = {}
    for path in [root, *root.rglob("*")]:
        found.setdefault(oct(mode(path)), set()).add(str(path.relative_to(root)))
    return found


def test_atomic_write_honours_the_umask_and_replaces_a_private_file(tmp_path, umask):
    path = tmp_path / "sub" / "table.csv"
    atomic_write_text(path, "a,b\n")
    assert mode(path) == 0o666 & ~umask
    assert mode(path.parent) == 0o777 & ~umask
    path.chmod(0o600)  # an old private file is replaced by a shareable one
    atomic_write_text(path, "a,b\n1,2\n")
    assert mode(path) == 0o666 & ~umask and path.read_text() == "a,b\n1,2\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["table.csv"]


def test_atomic_write_fsyncs_the_folder_after_the_rename(tmp_path, monkeypatch):
    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append("replace"), real_replace(a, b))[1])
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"),
                                                 real_fsync(fd))[1])
    atomic_write_text(tmp_path / "r.json", "{}")
    assert calls == ["file", "replace", "dir"]


def test_checkpoints_honour_the_umask(tmp_path, umask):
    import torch
    from accelerate import Accelerator

    from bench import checkpoint

    acc = Accelerator(cpu=True)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model, optimizer = acc.prepare(model, optimizer)
    directory = checkpoint.save(acc, tmp_path / "checkpoints" / "abc", {"cell_id": "abc", "step": 1})
    assert (directory / checkpoint.PROGRESS).is_file()
    found = modes_under(tmp_path / "checkpoints")
    files = {p for p in (tmp_path / "checkpoints").rglob("*") if p.is_file()}
    assert len(files) >= 3  # model, optimizer, RNG states, progress
    assert set(found) <= {oct(0o666 & ~umask), oct(0o777 & ~umask)}, found


def test_a_run_and_its_report_are_readable_by_the_group(fast_run_args, tmp_path, umask):
    from bench.cli import main

    results = tmp_path / "results"
    assert main([*fast_run_args, "--methods", "vit"]) == 0
    assert main(["report", "--results-dir", str(results)]) == 0
    records = list((results / "runs").rglob("*.json"))
    assert records and (results / "index.html").is_file() and list(results.glob("*.csv"))
    found = modes_under(results)
    assert set(found) <= {oct(0o666 & ~umask), oct(0o777 & ~umask)}, found
    assert mode(records[0]) == 0o666 & ~umask


def test_current_umask_reads_without_changing_it(umask):
    from bench.atomic import current_umask

    assert current_umask() == umask
    assert current_umask() == umask
