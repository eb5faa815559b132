# Aether — every target creates and uses the project virtualenv by itself.
#   make demo                     runtime only (aether-nats[server,cli,metrics]), then the demo
#   make test / lint / bench      + the development toolchain (pytest, mypy, ruff, ...)
#   make build                    wheel + sdist in dist/, checked with twine
#   PYTHON=python3.13 VENV=.venv313 make test     another interpreter, in its own virtualenv
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RUNTIME_EXTRAS := server,cli,metrics
RUNTIME_STAMP := $(VENV)/.runtime
DEV_STAMP := $(VENV)/.installed
PIP := $(BIN)/python -m pip --disable-pip-version-check

.PHONY: build test test-fast test-slow lint bench soak demo clean install runtime fault-loop

$(BIN)/python:
	@echo "==> [1/2] creating the virtualenv $(VENV) with $(PYTHON) ($$($(PYTHON) --version 2>&1))"
	$(PYTHON) -m venv $(VENV)

$(RUNTIME_STAMP): pyproject.toml | $(BIN)/python
	@echo "==> [2/2] installing aether-nats[$(RUNTIME_EXTRAS)] into $(VENV) (runtime only, no dev tools) ..."
	$(PIP) install -e '.[$(RUNTIME_EXTRAS)]'
	@touch $@

$(DEV_STAMP): pyproject.toml | $(BIN)/python
	@echo "==> [2/2] installing aether-nats[dev] into $(VENV) (runtime + pytest, mypy, ruff, build, twine, ...) ..."
	$(PIP) install -e '.[dev]'
	@touch $@ $(RUNTIME_STAMP)

runtime: $(RUNTIME_STAMP)

install: $(DEV_STAMP)

build: $(DEV_STAMP)
	rm -rf dist
	$(BIN)/python -m build --outdir dist .
	$(BIN)/python -m twine check --strict dist/*

test: $(DEV_STAMP)
	CI=$${CI:-true} $(BIN)/python -m pytest -q $(PYTEST_ARGS)

# the quick loop while developing: everything but the slow (multi-process scale and fault) tests
test-fast: $(DEV_STAMP)
	CI=$${CI:-true} $(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

# only the slow tests (CI runs them as part of `make test`)
test-slow: $(DEV_STAMP)
	CI=$${CI:-true} $(BIN)/python -m pytest -q -m slow $(PYTEST_ARGS)

lint: $(DEV_STAMP)
	$(BIN)/python -m ruff check src tests benchmarks examples
	$(BIN)/python -m mypy

bench: $(DEV_STAMP)
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

soak: $(DEV_STAMP)
	$(BIN)/python -m benchmarks.soak $(SOAK_ARGS)

# fault tests (or the suite: LOOP_ARGS="--suite --runs 5") in a loop beside a CPU hog; see scripts/fault_loop.py
fault-loop: $(DEV_STAMP)
	$(BIN)/python scripts/fault_loop.py $(LOOP_ARGS)

demo: $(RUNTIME_STAMP)
	@echo "==> running the demo: $(BIN)/aether demo $(DEMO_ARGS)"
	@$(BIN)/aether demo $(DEMO_ARGS); status=$$?; \
	if [ $$status -eq 0 ]; then \
	  echo ""; \
	  echo "Next steps"; \
	  echo "  the aether command:  $(BIN)/aether --help     (or: . $(BIN)/activate, then: aether --help)"; \
	  echo "  keep a server with data to inspect:"; \
	  echo "    terminal 1:  $(BIN)/aether server --store-dir /tmp/aether-data"; \
	  echo "    terminal 2:  $(BIN)/aether demo -s nats://127.0.0.1:4222"; \
	  echo "                 $(BIN)/aether events stats --all -s nats://127.0.0.1:4222"; \
	  echo "                 $(BIN)/aether events show acct-0001 --namespace <namespace printed by the demo>"; \
	  echo "  your own service:    README.md, section 'Your first service'"; \
	  echo "  docs:                README.md and docs/ (cli.md, cluster.md, aggregates.md, ...)"; \
	fi; \
	exit $$status

clean:
	rm -rf $(VENV) dist build .mypy_cache .ruff_cache .pytest_cache .hypothesis benchmarks/results
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
