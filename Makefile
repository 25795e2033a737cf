# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test test-fast format durations mutants venv clean

venv: $(STAMP)

# (Re)install when pyproject.toml changes; the editable install picks up code changes itself.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/lightning-dd fit --config configs/digits/ipc1.yaml

test: $(STAMP)
	$(VENV)/bin/ruff format --check lightning_dd benchmarks tests
	$(PY) -m pytest

# Rewrap the code to the line length (120) that `make test` checks.
format: $(STAMP)
	$(VENV)/bin/ruff format lightning_dd benchmarks tests

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

# Measure every test's time into tests/durations.json: tests over 5 s are then marked slow (tests/conftest.py).
durations: $(STAMP)
	LIGHTNING_DD_RECORD_DURATIONS=tests/durations.json $(PY) -m pytest

# Mutation testing of the algorithm's core against the fast suite (slow: see docs/mutation-testing.md).
mutants: $(STAMP)
	OMP_NUM_THREADS=1 LIGHTNING_DD_QUIET=1 nice -n 10 $(VENV)/bin/mutmut run --max-children 2
	$(VENV)/bin/mutmut results

clean:
	rm -rf $(VENV) lightning_logs .pytest_cache
