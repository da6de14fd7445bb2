# `make demo` runs the whole pipeline on the embedded synthetic world; `make test` runs the test suite.
# Both create .venv and install the project (with the train, annotate and dev extras) when it is missing.
PY := .venv/bin/python
STAMP := .venv/.installed

.PHONY: demo test test-slow bench lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3.11 -m venv .venv || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	# the CPU wheel of torch first: an unpinned resolve would pull a CUDA build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[train,annotate,dev]'
	touch $(STAMP)

demo: $(STAMP)
	.venv/bin/eeca demo --out runs/demo

test: $(STAMP)
	$(PY) -m pytest

test-slow: $(STAMP)
	EECA_SLOW=1 $(PY) -m pytest -m slow

bench: $(STAMP)
	for f in benchmarks/*.py; do $(PY) $$f || exit 1; done

lint: $(STAMP)
	.venv/bin/ruff check src tests benchmarks

clean:
	rm -rf .venv runs .pytest_cache
