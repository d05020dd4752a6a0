# Every target sets itself up from nothing: a virtual environment in .venv, then the package.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python

.PHONY: run test lint demo bench clean browser

# Installs say nothing unless they fail; then their whole output is shown.
QUIET = > $(VENV)/install.log 2>&1 || { cat $(VENV)/install.log; exit 1; }

$(VENV)/.runtime: pyproject.toml
	@echo "setting up $(VENV) (first run only)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --upgrade pip $(QUIET)
	@$(PY) -m pip install --quiet -e . $(QUIET)
	@touch $@

$(VENV)/.dev: pyproject.toml
	@echo "setting up $(VENV) with the development tools (first run only)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --upgrade pip $(QUIET)
	@$(PY) -m pip install --quiet -e '.[dev]' $(QUIET)
	@touch $(VENV)/.runtime $@

run: $(VENV)/.runtime
	@$(PY) -m bot

demo: $(VENV)/.runtime
	@$(PY) -m bot demo

# Two workers (the CI machine has two cores); each test file stays on one worker, so the
# file-level fixtures (a private PostgreSQL cluster, one bot for the fuzz) start once.
test: $(VENV)/.dev browser
	@$(PY) -m pytest -n 2 --dist loadfile

# The status page's browser test drives the system's Chromium (never a downloaded one):
# installed here when missing and this is root (CI is); otherwise that test is skipped,
# saying why (and in CI, where CI is set, it fails instead).
browser:
	@command -v chromium > /dev/null 2>&1 || [ "$$(id -u)" != 0 ] || { \
		echo "installing chromium for the browser tests (first run only)"; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
		} > /tmp/chromium-install.log 2>&1 || { cat /tmp/chromium-install.log; exit 1; }; }

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: $(VENV)/.dev
	$(PY) -m bench

clean:
	rm -rf $(VENV) *.egg-info .mypy_cache .pytest_cache .ruff_cache
