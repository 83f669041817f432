# Two entry points for a fresh machine with Python 3.11+:
#   make demo   install into .venv and run the gateway with the example config and emulators
#   make test   install into .venv (plus redis-server) and run lint, types and the whole suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint typecheck pytest system-deps bench serve clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/flowbiz demo

serve: $(BIN)/.installed
	$(BIN)/flowbiz serve --config gateway/examples/gateway.yaml

system-deps:
	bash .ci/system-deps

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(BIN)/.installed
	$(BIN)/mypy

pytest: $(BIN)/.installed system-deps
	$(BIN)/pytest

test: lint typecheck pytest

bench: export FLOWBIZ_BENCH := 1
bench: $(BIN)/.installed system-deps
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
