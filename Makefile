# Every target sets itself up from nothing: a virtual environment in .venv, then the package.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python

.PHONY: run test lint demo bench clean

$(VENV)/.runtime: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.dev: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(VENV)/.runtime $@

run: $(VENV)/.runtime
	$(PY) -m bot

demo: $(VENV)/.runtime
	$(PY) -m bot demo

# Two workers (the CI machine has two cores); each test file stays on one worker, so the
# file-level fixtures (a private PostgreSQL cluster, one bot for the fuzz) start once.
test: $(VENV)/.dev
	$(PY) -m pytest -n 2 --dist loadfile

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: $(VENV)/.dev
	$(PY) -m bench

clean:
	rm -rf $(VENV) *.egg-info .mypy_cache .pytest_cache .ruff_cache
