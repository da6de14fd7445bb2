# `make demo` runs the whole pipeline on the embedded synthetic world; `make test` runs the test suite.
# Both create .venv and install the project (with the train, annotate, export, fast and dev extras) when it is missing.
# `make test-lower` runs the suite in .venv-low, at the lowest versions pyproject.toml admits.
PY := .venv/bin/python
STAMP := .venv/.installed
# torch is installed first, as the CPU build: on Linux x86-64 PyPI's torch wheel is the CUDA build (with
# gigabytes of nvidia packages), so it is taken from PyTorch's CPU index; where that index cannot be
# reached the plain pin is installed (the CPU wheel on macOS, Windows and wherever pip's configured
# indexes or find-links hold it; the CUDA build otherwise). On a GPU machine install the CUDA build of a
# supported torch (see pyproject.toml) into .venv first, or run `make TORCH_INDEX= test`.
TORCH ?= torch==2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
LOW := .venv-low
LOW_PYTHON ?= python3.11
TORCH_LOW ?= torch==2.6.0

.PHONY: demo test test-lower test-slow bench lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3.11 -m venv .venv || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c 'import torch' 2>/dev/null || { test -n "$(TORCH_INDEX)" && \
	  $(PY) -m pip install -q --timeout 10 --retries 1 --index-url $(TORCH_INDEX) "$(TORCH)"; } || \
	  $(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e '.[train,annotate,export,fast,dev]'
	touch $(STAMP)

# uv's lowest-direct resolution installs the lower bound of every dependency in pyproject.toml;
# torch goes first (deepspeed's build imports it), from the CPU index when it can be reached.
$(LOW)/.installed: pyproject.toml $(STAMP)
	$(PY) -m pip install -q uv
	.venv/bin/uv venv -q --allow-existing --python $(LOW_PYTHON) $(LOW)
	{ test -n "$(TORCH_INDEX)" && .venv/bin/uv pip install -q --python $(LOW)/bin/python \
	  --index-url $(TORCH_INDEX) "$(TORCH_LOW)"; } || .venv/bin/uv pip install -q --python $(LOW)/bin/python "$(TORCH_LOW)"
	.venv/bin/uv pip install -q --python $(LOW)/bin/python setuptools wheel
	.venv/bin/uv pip install -q --python $(LOW)/bin/python --resolution lowest-direct \
	  --no-build-isolation-package deepspeed -e '.[train,annotate,export,fast,dev]'
	touch $@

demo: $(STAMP)
	.venv/bin/eeca demo --out runs/demo

test: $(STAMP)
	$(PY) -m pytest

test-lower: $(LOW)/.installed
	$(LOW)/bin/python -m pytest

test-slow: $(STAMP)
	EECA_SLOW=1 $(PY) -m pytest -m slow

bench: $(STAMP)
	for f in benchmarks/*.py; do $(PY) $$f || exit 1; done

lint: $(STAMP)
	.venv/bin/ruff check src tests benchmarks

clean:
	rm -rf .venv .venv-low runs .pytest_cache
