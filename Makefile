# Two commands do all the set-up: `make serve` and `make test`.
# Both bootstrap .venv on first use from pyproject.toml's pinned dependencies.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
BENCH_STAMP := $(VENV)/.bench-installed-stamp
# Optional extras to install beside dev, e.g. `make test EXTRAS=ray` (what CI does).
EXTRAS ?=
comma := ,
EXTRA_STAMP := $(VENV)/.extras-$(subst $(comma),-,$(EXTRAS))-stamp
# The compiled copy of the package (corosm/compiled.py): the hot modules built
# by mypyc where a C compiler exists; pure Python everywhere else. PURE=1 skips it.
COMPILED_DIR := build/compiled
COMPILED := $(COMPILED_DIR)/.stamp
SOURCES := $(shell find src/corosm -name '*.py')
BUILD := $(if $(PURE),,$(COMPILED))
# In a recipe: PYTHONPATH=<the compiled copy> when it was built (and PURE is unset),
# else nothing. The one test of "is there a compiled build", for every target below.
ON_COPY = $(if $(BUILD),$$(test -d $(COMPILED_DIR)/corosm && echo PYTHONPATH=$(CURDIR)/$(COMPILED_DIR)))
# Runs a command on the compiled copy when it was built, else on pure Python.
ON_BUILD = env $(ON_COPY)

.PHONY: serve test lint typecheck unit unit-compiled bench bench-quick clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "corosm needs Python 3.11+")'
	@$(PYTHON) -m venv $(VENV) || { \
	  echo "cannot create $(VENV); on Debian/Ubuntu: sudo apt-get install python3-venv" >&2; exit 1; }
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

$(EXTRA_STAMP): $(STAMP)
	@if [ -n "$(EXTRAS)" ]; then $(PY) -m pip install --quiet -e '.[dev,$(EXTRAS)]'; fi
	@touch $(EXTRA_STAMP)

$(COMPILED): $(STAMP) $(SOURCES)
	$(PY) -m corosm.compiled build $(COMPILED_DIR)
	@touch $(COMPILED)

serve: $(STAMP) $(BUILD)
	$(ON_BUILD) $(PY) -m corosm serve $(ARGS)

test: lint typecheck unit unit-compiled

lint: $(STAMP)
	$(PY) -m ruff check src tests bench examples
	$(PY) -m ruff format --check src tests bench examples

typecheck: $(STAMP)
	$(PY) -m mypy

unit: $(STAMP) $(EXTRA_STAMP)
	COROSM_BUILD=pure $(PY) -m pytest $(PYTEST_ARGS)

# The same suite on the compiled copy (COROSM_BUILD=compiled: tests/test_build.py
# checks that it really runs compiled); skipped, saying why, where it cannot be built.
unit-compiled: $(STAMP) $(EXTRA_STAMP) $(BUILD)
	@copy="$(ON_COPY)"; if [ -n "$$copy" ]; then \
	  echo "the suite again, on the build compiled by mypyc ($(COMPILED_DIR))"; \
	  env $$copy COROSM_BUILD=compiled $(PY) -m pytest $(PYTEST_ARGS); \
	else echo "no compiled build (PURE=1, or see above): the suite ran on pure Python only"; fi

# The bench extra (matplotlib, for the plots), installed once; the load generators
# are system packages that `corosm bench` names with their install command when missing.
$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP) $(BUILD)
	$(ON_BUILD) $(PY) -m corosm bench $(ARGS)

bench-quick: $(BENCH_STAMP) $(BUILD)
	$(ON_BUILD) $(PY) -m corosm bench --quick $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build src/*.egg-info
