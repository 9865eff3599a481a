# `make demo` and `make test` each work on a fresh clone: they create .venv, install, and run.
PYTHON ?= python3
VENV ?= .venv
# torch/torchvision pinned as a pair (torchvision pins torch); override for other machines:
#   make test TORCH_SPEC="torch==2.9.1 torchvision==0.24.1"
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
EXTRAS ?= test,deepspeed,trackers,slurm
BIN := $(VENV)/bin
STAMP := $(VENV)/.fgbench-installed

.PHONY: demo test install clean-results

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]" $(TORCH_SPEC)
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/python bench.py --methods all --datasets demo --seeds 0,1 --preset tiny --save-model
	$(BIN)/python bench.py eval --methods vit --datasets demo --seeds 0
	$(BIN)/python bench.py explain --methods all --datasets demo --images 4
	$(BIN)/python bench.py report

# Two pytest workers, one OpenMP thread each: on 2 cores the tests' tiny ops gain nothing from
# intra-op threads, and two processes keep both cores busy through the subprocess-heavy tests.
TEST_WORKERS ?= 2

test: install
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n $(TEST_WORKERS)

clean-results:
	rm -rf results/runs results/logs results/checkpoints results/leaderboard*.csv results/leaderboard.md results/leaderboard.tex results/runs.csv results/scaling.csv results/index.html \
		results/models results/evals results/explain results/per-class-*.csv results/where-methods-differ-*.csv
