# The README's two commands: `make test` and `make demo`. Both create .venv and install with pip.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test lint demo clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

lint: install
	$(VENV)/bin/ruff check src tests benchmarks

test: lint
	$(VENV)/bin/pytest

demo: install
	$(VENV)/bin/selfsup demo

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
