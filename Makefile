# The two commands: `make serve` and `make test`.
#
# `make serve` installs what serving needs (the package alone); `make test` installs the
# dev extra (test and lint tools, the worker and benchmark extras) and Debian's Chromium and
# ChromeDriver for the browser tests. Each install has its own stamp in the venv, so
# neither command reinstalls the other's set for nothing (the dev set contains the serving
# set, so it stamps both).
#
# TORCH_SPEC chooses the torch build. The default is the CPU wheel that lies on this
# kind of machine; on a GPU box use e.g. `make serve TORCH_SPEC="torch==2.13.0"
# TORCH_INDEX=https://download.pytorch.org/whl/cu128`. An unpinned torch would pull a
# multi-GB CUDA build, so torch is always installed first and on its own.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
HOST ?= 127.0.0.1
PORT ?= 8000
BIN := $(VENV)/bin
TORCH_STAMP := $(VENV)/.installed-torch
SERVE_STAMP := $(VENV)/.installed-serve
DEV_STAMP := $(VENV)/.installed-dev
# The browser tests drive these exact paths (tests/dashboard/test_browser.py).
CHROMIUM := /usr/bin/chromium
CHROMEDRIVER := /usr/bin/chromedriver
# apt-get needs root: run it as is when root, through sudo when there is one.
SUDO := $(shell [ "$$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && echo sudo)

.PHONY: install install-serve browser serve test lint clean

install: $(DEV_STAMP)

install-serve: $(SERVE_STAMP)

$(TORCH_STAMP): Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	touch $@

$(SERVE_STAMP): $(TORCH_STAMP) pyproject.toml
	$(BIN)/python -m pip install -q -e .
	touch $@

$(DEV_STAMP): $(TORCH_STAMP) pyproject.toml
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@ $(SERVE_STAMP)

# Installs Chromium and ChromeDriver only when one is missing. Without root, sudo or apt
# (a developer's laptop) it says so and goes on: the browser tests then skip, and fail
# when CI is set.
browser:
	@if [ -x $(CHROMIUM) ] && [ -x $(CHROMEDRIVER) ]; then exit 0; fi; \
	if ! command -v apt-get >/dev/null 2>&1 || { [ "$$(id -u)" -ne 0 ] && [ -z "$(SUDO)" ]; }; then \
	  echo "make browser: cannot install chromium chromium-driver here (needs apt-get as root or sudo)"; \
	  exit 0; \
	fi; \
	echo "make browser: installing Debian's chromium and chromium-driver"; \
	$(SUDO) apt-get update -qq && \
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver

serve: $(SERVE_STAMP)
	$(BIN)/hpo serve --host $(HOST) --port $(PORT)

test: $(DEV_STAMP) browser
	$(BIN)/ruff check hpo_service tests benchmarks migrations
	$(BIN)/ruff format --check hpo_service tests benchmarks migrations
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check hpo_service tests benchmarks migrations

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
