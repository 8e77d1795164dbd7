# Set-up and everyday commands. `make serve` and `make test` are the README's two set-up commands.
# Another Python gets a venv of its own: `make test PYTHON=python3.12` uses .venv-python3.12 (3.11-3.13 supported).
PYTHON ?= python3
VENV   ?= $(if $(filter python3,$(PYTHON)),.venv,.venv-$(notdir $(PYTHON)))
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: serve test lint demo-model bench fuzz-api

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

serve: $(STAMP)
	$(BIN)/aqa serve

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

# Re-create the bundled demo model from nothing (synthetic data + training + fresh-set evaluation).
demo-model: $(STAMP)
	$(BIN)/aqa demo build

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

# Fuzz the HTTP API with Schemathesis (every check, 50 cases per operation and phase) against a real
# `aqa serve` with the demo model; a bounded version runs in `make test` (tests/test_api_fuzz.py).
fuzz-api: $(STAMP)
	$(BIN)/python -m tests.fuzz_api --max-examples 50
