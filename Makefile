# banking-es: every target installs what it needs into ./.venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
UV     := $(BIN)/uv
# Two installs: what runs (requirements.lock: `make run`, the image) and what tests
# (requirements-dev.lock: the same pins plus the dev extra). The dev stamp keeps the name
# .installed. Syncing the runtime lock removes the dev tools, so it removes the dev stamp
# too (the next `make test` re-installs them); the dev install stamps both.
STAMP     := $(VENV)/.installed
RUN_STAMP := $(VENV)/.installed-runtime
LINT   := src tests scripts $(wildcard bench)

.PHONY: install install-runtime run test test-fast lint fmt typecheck currencies bench lock clean

# --compile-bytecode: with PYTHONDONTWRITEBYTECODE=1 (set on our machines and in the image)
# Python would compile every module at every start: `banking-es --help` took 2.0 s instead
# of 0.55 s, and a server was ready in 6-11 s instead of about 2 s.
sync = (test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)) \
	&& $(BIN)/python -m pip install --quiet --disable-pip-version-check uv==0.13.9 \
	&& $(UV) pip sync --quiet --compile-bytecode --python $(BIN)/python $(1) \
	&& $(UV) pip install --quiet --compile-bytecode --python $(BIN)/python --no-deps -e .

# A current dev install already has every runtime package (same pins): `make run` keeps it.
$(RUN_STAMP): pyproject.toml requirements.lock
	if [ -f $(STAMP) ] && [ -z "$$(find pyproject.toml requirements.lock requirements-dev.lock -newer $(STAMP))" ]; \
	then echo "using the dev install: it has every runtime package"; \
	else rm -f $(STAMP) && $(call sync,requirements.lock); fi
	touch $(RUN_STAMP)

$(STAMP): pyproject.toml requirements.lock requirements-dev.lock
	$(call sync,requirements-dev.lock)
	touch $(RUN_STAMP) $(STAMP)

## make install: the dev install (what `make test` uses); install-runtime: what runs only
install: $(STAMP)

install-runtime: $(RUN_STAMP)

## make run: serve the API on http://127.0.0.1:3000 (SQLite under ./data unless DATABASE_URL is set)
run: $(RUN_STAMP)
	$(BIN)/banking-es serve

## make test: the whole suite (needs PostgreSQL and Redis on loopback; see README)
# Two pytest-xdist workers: most tests wait on servers, sockets and sleeps, not on the CPU, so
# two halve the time even on two cores. loadgroup keeps most PostgreSQL tests on one worker
# (tests/xdist_support.py); `pytest` alone runs the same tests one at a time.
PYTEST_PARALLEL := -n 2 --dist loadgroup

test: $(STAMP)
	$(BIN)/ruff check $(LINT)
	$(BIN)/ruff format --check $(LINT)
	$(BIN)/lint-imports
	$(BIN)/mypy src
	$(BIN)/pytest $(PYTEST_PARALLEL)

test-fast: $(STAMP)
	$(BIN)/pytest $(PYTEST_PARALLEL) -m "not slow"

## make lint: style, formatting and the import contracts of pyproject.toml (the layers)
lint: $(STAMP)
	$(BIN)/ruff check $(LINT)
	$(BIN)/ruff format --check $(LINT)
	$(BIN)/lint-imports

fmt: $(STAMP)
	$(BIN)/ruff format $(LINT)
	$(BIN)/ruff check --fix $(LINT)

typecheck: $(STAMP)
	$(BIN)/mypy src

## make currencies: regenerate src/banking_es/domain/currencies.py from the pinned iso4217
currencies: $(STAMP)
	$(BIN)/python scripts/currencies.py

## make bench: the performance table (PostgreSQL on loopback; installs wrk and the bench extra)
bench: $(STAMP)
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(UV) pip install --quiet --compile-bytecode --python $(BIN)/python -r requirements-bench.lock
	$(BIN)/python -m bench

## make lock: re-pin all three; each later lock is constrained to the one before, so the
## tests and the bench run exactly the versions that the image runs.
# Only uv is needed: syncing a lock here would change the venv before the locks are written.
$(UV):
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==0.13.9

lock: $(UV)
	$(UV) pip compile --quiet --python-version 3.11 pyproject.toml -o requirements.lock
	$(UV) pip compile --quiet --python-version 3.11 --extra dev -c requirements.lock \
		pyproject.toml -o requirements-dev.lock
	$(UV) pip compile --quiet --python-version 3.11 --extra dev --extra bench \
		-c requirements-dev.lock pyproject.toml -o requirements-bench.lock

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
