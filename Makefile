# The two commands of the README: `make tutorial` and `make test`. Both create .venv when it is absent.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.udalib-installed
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
# Unit tests run several processes at once (DDP, data workers): OpenMP threads that wait passively leave them the
# cores. A notebook is one kernel alone on the machine: threads that spin between operations train MiniCity runs
# about a quarter faster (benchmarks/omp_wait_policy.py), with the same numbers.
export OMP_WAIT_POLICY ?= PASSIVE
NOTEBOOK_OMP_WAIT_POLICY ?= ACTIVE
export PYTHONHASHSEED ?= 0

.PHONY: env tutorial test unit notebooks-test browser-test lint notebooks student-notebooks table results clean site site-test

env: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e ".[notebooks,test,site]"
	@touch $(STAMP)

# Execute every notebook on MiniCity with papermill, then print and save the results table and the CrossCity
# table (notebook 10's runs, read back from runs/).
tutorial: $(STAMP)
	@mkdir -p runs/notebooks
	@set -e; for nb in $(NOTEBOOKS); do \
	  echo "== $$nb"; start=$$(date +%s); \
	  OMP_WAIT_POLICY=$(NOTEBOOK_OMP_WAIT_POLICY) $(VENV)/bin/papermill --cwd notebooks -k python3 $$nb runs/notebooks/$$(basename $$nb) --log-level ERROR; \
	  echo "   done in $$(( $$(date +%s) - start )) s"; \
	done
	$(PY) -m udalib table --runs runs --out runs/results_table.csv
	$(PY) -m udalib crosscity --quiet --out runs/crosscity_scores.csv

# Unit tests, then the nbval notebook tests (each notebook executed as stored, at its CPU defaults), then the
# browser test of notebook 11's widgets (it reads the runs the notebooks wrote).
test: $(STAMP)
	$(VENV)/bin/pytest -q tests
	OMP_WAIT_POLICY=$(NOTEBOOK_OMP_WAIT_POLICY) $(VENV)/bin/pytest -q --nbval-lax --nbval-current-env --nbval-cell-timeout=600 notebooks
	@$(MAKE) --no-print-directory browser-test

# Notebook 11 in JupyterLab, run and clicked in headless Chromium (Playwright drives Debian's chromium; the
# screenshots go to runs/test-artifacts/). Installs chromium with apt-get (as root, about 1 minute) if missing.
browser-test: $(STAMP)
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "browser-test: installing chromium with apt-get"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
	      || { echo "browser-test: apt-get could not install chromium (see above)"; exit 1; }; \
	  else \
	    echo "browser-test: /usr/bin/chromium is missing; install it as root (apt-get install -y chromium)"; exit 1; \
	  fi; }
	$(VENV)/bin/pytest -q tests_browser --ignore=tests_browser/test_site.py

# Each notebook is paired with its percent-format source notebooks/src/NN_*.py (jupytext, notebooks/jupytext.toml):
# edit either, then bring the other up to date (the newer of the two wins). Outputs are never stored.
notebooks: $(STAMP)
	$(VENV)/bin/jupytext --sync notebooks/src/*.py

# Student copies of the notebooks, made by nbgrader (`generate_assignment`, one assignment per notebook) in a course
# folder under runs/nbgrader/: source/NN_x/NN_x.ipynb is the notebook as stored, release/NN_x/NN_x.ipynb the student
# copy (each solution block replaced by `raise NotImplementedError()`, check cells locked, outputs cleared), and
# gradebook.db the assignments for `nbgrader autograde`. nbgrader calls the venv's `alembic`: its bin/ goes on PATH.
NBGRADER_ROOT := runs/nbgrader
student-notebooks: $(STAMP)
	@mkdir -p $(NBGRADER_ROOT)
	@set -e; for nb in $(NOTEBOOKS); do \
	  name=$$(basename $$nb .ipynb); \
	  rm -rf $(NBGRADER_ROOT)/source/$$name; mkdir -p $(NBGRADER_ROOT)/source/$$name; \
	  cp $$nb $(NBGRADER_ROOT)/source/$$name/; \
	  (cd $(NBGRADER_ROOT) && PATH="$(abspath $(VENV))/bin:$$PATH" nbgrader generate_assignment $$name \
	    --create --force --log-level=ERROR --CourseDirectory.root="$(abspath $(NBGRADER_ROOT))"); \
	  echo "$(NBGRADER_ROOT)/release/$$name/$$name.ipynb"; \
	done

# The course as a static site (Jupyter Book 1, book/): the notebooks as `make tutorial` executed them, never run
# again; exercises in boxes, solutions in "Click to show" dropdowns (STUDENT=1: without solutions, in
# runs/site-student/); MathJax served locally, no CDN. Warnings are errors.
NOTEBOOKS_DIR ?= runs/notebooks
SITE := runs/site$(if $(STUDENT),-student)
site: $(STAMP)
	$(PY) book/stage.py --notebooks $(NOTEBOOKS_DIR) --out $(SITE)-src --html $(SITE) $(if $(STUDENT),--student)

# The built site in headless Chromium (tests_browser/test_site.py; `make browser-test` installs chromium).
site-test: $(STAMP)
	$(VENV)/bin/pytest -q tests_browser/test_site.py

unit: $(STAMP)
	$(VENV)/bin/pytest -q tests

lint: $(STAMP)
	$(VENV)/bin/ruff check udalib tests tests_browser benchmarks data_scripts notebooks/src book

table: $(STAMP)
	$(PY) -m udalib table --runs runs --out runs/results_table.csv

# The measured tables of README.md and benchmarks/RESULTS.md (between their <!-- results: NAME --> markers), written
# from benchmarks/results/*.csv; tests/test_results_tables.py fails when they differ.
results: $(STAMP)
	$(PY) benchmarks/write_results.py

clean:
	rm -rf runs .pytest_cache
