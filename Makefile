# The two front-door commands (see README.md). Both build .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# A CPU build of torch: without it pip resolves `torch` to a multi-GB CUDA build. It goes in first,
# so the worker extra's `torch>=2.4` is already satisfied. (`pip install .` alone is the client only.)
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
# What `make run` passes to `ganforge up`, e.g. make run UP_ARGS="--port 8011 --data-dir ./gf-data".
UP_ARGS ?= --demo

.PHONY: install run test lint bench

# The whole service, `.[all]` (what `ganforge up` runs); `make test` adds `.[test]` (pytest, ruff, mypy, ...).
$(BIN)/ganforge: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/pip install --quiet -e '.[all]'
	touch $@

$(VENV)/.test-tools: $(BIN)/ganforge
	$(BIN)/pip install --quiet -e '.[all,test]'
	# openapi-python-client pins typer below ours: a venv of its own (as pipx would), for tests/test_openapi_contract.py
	$(PYTHON) -m venv $(VENV)/tools/openapi
	$(VENV)/tools/openapi/bin/pip install --quiet 'openapi-python-client>=0.29'
	touch $@

install: $(BIN)/ganforge

# make runs this one command without a shell; make does not pass SIGINT on to it (it waits for it),
# so `ganforge up` watches its parent and stops when make is told to (ganforge/parent.py).
run: install  ## embedded default: SQLite + file-system broker, API on :8000, one worker, a demo job
	$(BIN)/ganforge up $(UP_ARGS)

test: $(VENV)/.test-tools  ## lint, types, then the whole suite against PostgreSQL + Redis and the embedded default
	$(BIN)/ruff check .
	$(BIN)/mypy models api worker ganforge migrations
	# Three test processes on two cores, one test file each at a time (a file's services are shared by its tests):
	# the suite is CPU-bound there (33 CPU-min in 20 min with three or four). The slowest listed.
	$(BIN)/pytest -q -n 3 --dist loadfile --durations=20

bench: install
	$(BIN)/python bench/trainer_overhead.py
