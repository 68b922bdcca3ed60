# mailwarden: the two set-up commands of the README, plus bench/lint/bpf.
SHELL   := /bin/bash
PYTHON  ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
RUN_OK  := $(VENV)/.run-installed
DEV_OK  := $(VENV)/.dev-installed

.PHONY: run test bench lint check-data setup-test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(RUN_OK): pyproject.toml setup.py src/mailwarden/sources/_postfixscan.c | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(DEV_OK): pyproject.toml setup.py src/mailwarden/sources/_postfixscan.c | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $@ $(RUN_OK)

## make run: install and run the main job (analyze the system mail log, else the bundled sample)
run: $(RUN_OK)
	$(BIN)/mailwarden analyze

## make setup-test: Debian packages, built artefacts and system prerequisites of the test suite
## (the packages first: gcc must be there when pip builds the C accelerator)
setup-test: | $(BIN)/python
	bash scripts/test-setup.sh
	$(MAKE) $(DEV_OK)

## make test: everything the suite needs, then the whole suite
test: setup-test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## make lint: ruff + mypy
lint: $(DEV_OK)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

## make bench: benchmarks (see bench/README.md); figures go to bench/out/
bench: setup-test
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache
