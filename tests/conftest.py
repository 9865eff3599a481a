"""Shared test fixtures. Everything runs on the CPU; nothing reaches the network."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def cli_env(**extra: str) -> dict[str, str]:
    """Environment for `bench.py` subprocesses: CPU only, offline, no stray accelerate config, one
    OpenMP thread (tiny models gain nothing from more, and on a busy machine threads that wait on
    each other make a seconds-long run take minutes)."""
    env = dict(os.environ)
    env.update(CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1", ACCELERATE_CONFIG_FILE=os.devnull, OMP_NUM_THREADS="1")
    env.pop("ACCELERATE_MIXED_PRECISION", None)
    env.update(extra)
    return env


def run_bench(*args: str, timeout: float = 300, env: dict | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """Run `python bench.py ARGS` in a subprocess; returns the CompletedProcess (text output)."""
    return subprocess.run([sys.executable, str(REPO / "bench.py"), *args], cwd=cwd, env=env or cli_env(),
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    """A data root holding the generated demo dataset (generated once per test session)."""
    from bench.data import demo

    root = tmp_path_factory.mktemp("data")
    demo.generate(root / "demo")
    return root


@pytest.fixture
def fast_run_args(demo_root, tmp_path) -> list[str]:
    """Arguments for a seconds-long demo run into a fresh results folder."""
    return ["--datasets", "demo", "--preset", "tiny", "--data-root", str(demo_root), "--results-dir",
            str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache"), "--steps", "4", "--eval-every", "2",
            "--warmup-steps", "1", "--no-progress"]


@pytest.fixture
def single_thread():
    """One intra-op thread for tests of many tiny tensor ops: on a shared, busy machine two
    OpenMP threads wait on each other at every op (100x slower), and tiny ops gain nothing."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
