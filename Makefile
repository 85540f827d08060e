# The two commands of the README: `make tutorial` and `make test`. Both create .venv when it is absent.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.udalib-installed
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
export OMP_WAIT_POLICY ?= PASSIVE
export PYTHONHASHSEED ?= 0

.PHONY: env tutorial test unit notebooks-test lint table clean

env: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e ".[notebooks,test]"
	@touch $(STAMP)

# Execute every notebook on MiniCity with papermill, then print and save the results table.
tutorial: $(STAMP)
	@mkdir -p runs/notebooks
	@set -e; for nb in $(NOTEBOOKS); do \
	  echo "== $$nb"; start=$$(date +%s); \
	  $(VENV)/bin/papermill --cwd notebooks -k python3 $$nb runs/notebooks/$$(basename $$nb) --log-level ERROR; \
	  echo "   done in $$(( $$(date +%s) - start )) s"; \
	done
	$(PY) -m udalib table --runs runs --out runs/results_table.csv

# Unit tests, then the nbval notebook tests (each notebook executed as stored, at its CPU defaults).
test: $(STAMP)
	$(VENV)/bin/pytest -q tests
	$(VENV)/bin/pytest -q --nbval-lax --nbval-current-env --nbval-cell-timeout=600 notebooks

unit: $(STAMP)
	$(VENV)/bin/pytest -q tests

lint: $(STAMP)
	$(VENV)/bin/ruff check udalib tests benchmarks data_scripts

table: $(STAMP)
	$(PY) -m udalib table --runs runs --out runs/results_table.csv

clean:
	rm -rf runs .pytest_cache
