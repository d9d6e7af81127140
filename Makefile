# Two commands for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.ehrlens-installed

.PHONY: demo demo-full test stability lint format clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch is pinned and installed first so that no other requirement pulls a different build.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# About a minute: one small model, ends by writing ehrlens-demo/report.html.
demo: $(STAMP)
	$(PY) -m ehrlens.app.demo

# The full-size run: two models, many minutes.
demo-full: $(STAMP)
	$(PY) -m ehrlens.app.demo --full

# Two workers (one per core of the reference machine), each test file on one worker so that
# its module fixtures (a trained model, a Ray runtime) are built once.
test: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadgroup

# The suite's stability check: 1 and 2 torch threads, then with every core kept busy.
stability: $(STAMP)
	PY=$(PY) tests/stability.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
