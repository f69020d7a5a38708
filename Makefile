# Set-up is part of every target: each creates .venv and installs what it needs, idempotently.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: run demo lab test lint typecheck docs fmt test-gpu bench bench-distributed bench-gpu bench-peers clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --upgrade pip
	@$(PY) -m pip install --quiet -e '.[test,lab,gradbench]'
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

## The main job: train an MLP on the bundled 8x8 digits (no download); writes runs/digits-*/.
run: $(STAMP)
	@$(PY) -m chainrule train --data digits --hidden 128,64 --activation relu --optimizer sgd --lr 0.1 --epochs 30 --seed 0

## Why backprop: one MLP gradient by reverse mode vs finite differences, with timings.
demo: $(STAMP)
	@$(PY) -m chainrule demo

## The lab: five questions about backpropagation answered by measurement, as an HTML report.
lab: $(STAMP)
	@$(PY) -m chainrule lab all --out runs/lab

## The whole test suite (the same command CI runs). The set-up scripts install Open MPI and
## mpi4py (the data-parallel tests run `mpirun -n 2`), and Chromium and Graphviz from Debian's
## packages where they can (the lab's browser test and graph drawing).
test: lint typecheck docs
	@scripts/setup_mpi.sh
	@scripts/setup_browser.sh
	@$(PY) -m pytest tests src README.md

## Lint and format checks (ruff, 100 columns; the rules are in pyproject.toml).
lint: $(STAMP)
	@$(VENV)/bin/ruff check src tests benchmarks
	@$(VENV)/bin/ruff format --check --quiet src tests benchmarks

## Types of the inner layers (engine/, transforms/; mypy's settings are in pyproject.toml).
typecheck: $(STAMP)
	@$(VENV)/bin/mypy

## The API reference from the docstrings (pdoc) into build/api/; a pdoc warning fails it. Also
## rewrites docs/primitives.md from the primitive table.
docs: $(STAMP)
	@$(PY) scripts/primitive_table.py
	@scripts/build_docs.sh $(PY) build/api

## Format the code and apply ruff's safe fixes.
fmt: $(STAMP)
	@$(VENV)/bin/ruff format src tests benchmarks
	@$(VENV)/bin/ruff check --fix src tests benchmarks

## Benchmarks against hand-written NumPy (and PyTorch CPU when `make bench-peers` installed it).
bench: $(STAMP)
	@$(PY) benchmarks/bench_engine.py

## Data-parallel steps per second on 1 and 2 MPI ranks, and the all-reduce cost model.
bench-distributed: $(STAMP)
	@scripts/setup_mpi.sh
	@$(PY) benchmarks/bench_distributed.py

## On a machine with an NVIDIA GPU: CuPy and cuBLAS, the GPU tests (they skip without one), the
## GPU benchmark (chainrule eager and captured, CuPy by hand, PyTorch and JAX when present).
test-gpu: $(STAMP)
	@$(PY) -m pip install --quiet -e '.[cuda]'
	@$(PY) -m pytest -q tests/backend/test_device.py tests/backend/test_cuda_cublas.py \
	  tests/backend/test_cuda_graph.py tests/backend/test_precision.py tests/backend/test_capture.py
	@$(PY) benchmarks/bench_gpu.py --quick

bench-gpu: $(STAMP)
	@$(PY) benchmarks/bench_gpu.py

bench-peers: $(STAMP)
	@$(PY) -m pip install --quiet 'torch==2.13.0' 'jax[cpu]==0.10.2'

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .hypothesis .mypy_cache .ruff_cache
