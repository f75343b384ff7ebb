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

.PHONY: serve test lint typecheck unit bench bench-quick clean

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

serve: $(STAMP)
	$(PY) -m corosm serve $(ARGS)

test: lint typecheck unit

lint: $(STAMP)
	$(PY) -m ruff check src tests bench examples
	$(PY) -m ruff format --check src tests bench examples

typecheck: $(STAMP)
	$(PY) -m mypy

unit: $(STAMP) $(EXTRA_STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# The bench extra (matplotlib, for the plots), installed once; the load generators
# are system packages that `corosm bench` names with their install command when missing.
$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(PY) -m corosm bench $(ARGS)

bench-quick: $(BENCH_STAMP)
	$(PY) -m corosm bench --quick $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build src/*.egg-info
