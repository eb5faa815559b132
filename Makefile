# Aether — every target creates and uses the project virtualenv by itself.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: build test test-fast test-slow lint bench soak demo clean install fault-loop

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

build: $(STAMP)
	$(BIN)/python -m pip wheel --quiet --no-deps -w dist .

test: $(STAMP)
	CI=$${CI:-true} $(BIN)/python -m pytest -q $(PYTEST_ARGS)

# the quick loop while developing: everything but the slow (multi-process scale and fault) tests
test-fast: $(STAMP)
	CI=$${CI:-true} $(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

# only the slow tests (CI runs them as part of `make test`)
test-slow: $(STAMP)
	CI=$${CI:-true} $(BIN)/python -m pytest -q -m slow $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/python -m ruff check src tests benchmarks examples
	$(BIN)/python -m mypy

bench: $(STAMP)
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

soak: $(STAMP)
	$(BIN)/python -m benchmarks.soak $(SOAK_ARGS)

# fault tests (or the suite: LOOP_ARGS="--suite --runs 5") in a loop beside a CPU hog; see scripts/fault_loop.py
fault-loop: $(STAMP)
	$(BIN)/python scripts/fault_loop.py $(LOOP_ARGS)

demo: $(STAMP)
	$(BIN)/aether demo $(DEMO_ARGS)

clean:
	rm -rf $(VENV) dist build .mypy_cache .ruff_cache .pytest_cache .hypothesis benchmarks/results
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
