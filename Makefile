# The two set-up commands of the README are `make demo` and `make test`:
# each creates .venv when missing and installs into it.
PYTHON ?= python3
VENV   ?= .venv
PORT   ?= 8000
BIN     = $(VENV)/bin

.PHONY: demo test cluster-test lint format install dev clean bench soak

$(BIN)/python:
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "imis-bridge needs Python 3.11 or newer"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@ $(VENV)/.installed

install: $(VENV)/.installed
dev: $(VENV)/.installed-dev

demo: $(VENV)/.installed
	$(BIN)/bridge demo --port $(PORT)

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# deploy/ on loopback: nginx (Debian's nginx-light) with TLS in front of two `bridge serve`
# on a fresh PostgreSQL database (BRIDGE_TEST_DATABASE_URL's server, else 127.0.0.1:5432).
# `make test` runs it too; it skips, saying why, without nginx or PostgreSQL.
cluster-test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest tests/cluster -rs $(PYTEST_ARGS)

# The benchmark of /work/shared/PERFORMANCE.md (not part of `make test`): one table,
# JSON under bench/results/. BENCH_ARGS passes options, e.g. BENCH_ARGS='--no-peer'.
bench: $(VENV)/.installed-dev
	@test -x $(BIN)/py-spy || $(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# The soak (not part of `make test`): 10 minutes of mixed load against one `bridge serve`,
# then a Markdown report; exits 1 on any 5xx or on growth. SOAK_ARGS passes options,
# e.g. SOAK_ARGS='--minutes 2' or SOAK_ARGS='--database postgresql --workers 2'.
soak: $(VENV)/.installed-dev
	$(BIN)/python -m bench.soak $(SOAK_ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict bridge
	$(BIN)/lint-imports

format: $(VENV)/.installed-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .bridge-demo .mypy_cache .ruff_cache .pytest_cache
