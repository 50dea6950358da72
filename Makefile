# Two entry points (README.md): `make run` (the main job on the embedded default) and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
WORKDIR ?= runs/default
# Installs are constrained by the lock (docs/install.md); `make lock` regenerates it.
LOCK ?= requirements/lock.txt
LOCK_VENV ?= /tmp/seekjax-lock-venv
TORCH_LOCK ?= 2.13.0

.PHONY: install install-test run test lock

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q -c $(LOCK) -e .

install-test: $(BIN)/python
	$(BIN)/pip install -q -c $(LOCK) -e '.[test,torch]'

run: install
	$(BIN)/python -m seekjax.main --workdir=$(WORKDIR)

test: install-test
	$(BIN)/python -m pytest -q --durations=20 tests

# Re-resolve every dependency to its newest allowed version in a scratch venv, and pin it:
# .[test,torch] installed (torch at TORCH_LOCK), .[cuda] and .[tpu] resolved by dry runs.
lock:
	rm -rf $(LOCK_VENV)
	$(PY) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install -q --upgrade pip
	$(LOCK_VENV)/bin/pip install -q -e '.[test,torch]' 'torch==$(TORCH_LOCK)'
	$(LOCK_VENV)/bin/pip freeze --exclude-editable > $(LOCK_VENV)/freeze.txt
	$(LOCK_VENV)/bin/pip install -q --dry-run -c $(LOCK_VENV)/freeze.txt --report $(LOCK_VENV)/cuda.json -e '.[cuda]'
	$(LOCK_VENV)/bin/pip install -q --dry-run -c $(LOCK_VENV)/freeze.txt --report $(LOCK_VENV)/tpu.json -e '.[tpu]'
	$(LOCK_VENV)/bin/python requirements/merge_pins.py $(LOCK_VENV)/freeze.txt $(LOCK_VENV)/cuda.json $(LOCK_VENV)/tpu.json > $(LOCK).tmp
	mv $(LOCK).tmp $(LOCK)
