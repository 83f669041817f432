# Two entry points for a fresh machine with Python 3.11+:
#   make demo   install into .venv and run the gateway with the example config and emulators
#   make test   install into .venv (plus redis-server) and run lint, types, the docs build and
#               the whole suite
#   make lock   re-resolve constraints.txt after editing pyproject.toml (keeps other pins)
#   make lock-upgrade   refresh every pin in constraints.txt to the newest allowed release
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Every install (here, the container image) takes its versions from this file: the same
# versions on every machine, and no release newer than the last `make lock-upgrade`.
LOCK   := constraints.txt
LOCK_COMPILE = $(BIN)/uv pip compile pyproject.toml --extra dev --universal \
	--python-version 3.11 --custom-compile-command "make lock" --quiet -o $(LOCK)

.PHONY: demo test lint typecheck docs pytest system-deps bench soak fuzz serve clean lock lock-upgrade lock-tool

$(BIN)/.installed: pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --constraint $(LOCK) -e '.[dev]'
	touch $@

# The resolver alone, so that a lock that no longer fits pyproject.toml can still be redone.
lock-tool:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --constraint $(LOCK) uv

lock: lock-tool
	$(LOCK_COMPILE)

lock-upgrade: lock-tool
	$(LOCK_COMPILE) --upgrade

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

# The documentation site (mkdocs.yml), offline into var/site; --strict makes every warning (a
# broken link or anchor, a nav entry without its page) an error. A step of its own beside
# lint and typecheck rather than a test: it checks the docs once, in about a second, and
# `make docs` alone rebuilds the site to read.
docs: $(BIN)/.installed
	$(BIN)/mkdocs build --strict --quiet

# One pytest worker per core: every test starts its own servers on free ports, so they run
# side by side (a single file runs alone with `$(BIN)/pytest tests/<path>`).
pytest: $(BIN)/.installed system-deps
	$(BIN)/pytest -n auto

test: lint typecheck docs pytest

bench: export FLOWBIZ_BENCH := 1
bench: $(BIN)/.installed system-deps
	$(BIN)/python -m bench

# A real deployment (web + two workers on an AOF redis-server) at a steady rate for an hour,
# a worker SIGKILLed and Redis restarted every ten minutes; the record goes to bench/results/.
SOAK_ARGS ?= --minutes 60
soak: $(BIN)/.installed system-deps
	$(BIN)/python -m bench.soak $(SOAK_ARGS)

# The property tests of every edge and parser at the ``fuzz`` Hypothesis profile: 100,000
# examples per test (FLOWBIZ_FUZZ_EXAMPLES to change). Hours, not minutes; not in `make test`.
FUZZ_ARGS ?=
fuzz: $(BIN)/.installed system-deps
	HYPOTHESIS_PROFILE=fuzz $(BIN)/pytest tests/properties -p no:cacheprovider -o timeout=0 \
		--hypothesis-show-statistics -q $(FUZZ_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
