# `make test` builds .venv on first use (CPU torch first, so pip never pulls a CUDA build),
# then lints and runs the whole test suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0

.PHONY: demo test lint bench bench-train clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==$(TORCH_VERSION)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# The main job: the whole recipe on MNIST-1D (regenerated offline) within 3 minutes: sanity
# check, LR range test, coarse and fine search, final training, runs/recipe-mnist1d/report.html.
demo: $(VENV)/.installed
	$(VENV)/bin/gradwise recipe mnist1d --budget 3m

lint: $(VENV)/.installed
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m mypy

test: lint
	$(PY) -m pytest

bench: $(VENV)/.installed
	$(PY) benchmarks/optim_step.py

# MNIST time-to-accuracy and throughput; MNIST_NPZ must name an MNIST .npz
bench-train: $(VENV)/.installed
	$(PY) benchmarks/train_speed.py --data $(MNIST_NPZ)

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .ruff_cache .mypy_cache
