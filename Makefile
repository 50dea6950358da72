# Two entry points (README.md): `make run` (the main job on the embedded default) and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
WORKDIR ?= runs/default

.PHONY: install install-test run test

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q -e .

install-test: $(BIN)/python
	$(BIN)/pip install -q -e '.[test,torch]'

run: install
	$(BIN)/python -m seekjax.main --workdir=$(WORKDIR)

test: install-test
	$(BIN)/python -m pytest -q tests
