# The two commands: `make serve` and `make test`. Both go through `make install`.
#
# TORCH_SPEC chooses the torch build. The default is the CPU wheel that lies on this
# kind of machine; on a GPU box use e.g. `make install TORCH_SPEC="torch==2.13.0"
# TORCH_INDEX=https://download.pytorch.org/whl/cu128`. An unpinned torch would pull a
# multi-GB CUDA build, so torch is always installed first and on its own.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
HOST ?= 127.0.0.1
PORT ?= 8000
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install serve test lint typecheck clean bench

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

serve: install
	$(BIN)/hpo serve --host $(HOST) --port $(PORT)

test: install
	$(BIN)/ruff check hpo_service tests benchmarks migrations
	$(BIN)/ruff format --check hpo_service tests benchmarks migrations
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check hpo_service tests benchmarks migrations

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
