# rewindkit — two commands on a fresh machine:
#   make reproduce   create .venv, install, run every notebook on the offline laptop profile
#   make test        create/update .venv, run unit tests and every notebook in the smoke profile
PYTHON ?= python3
# The CPU wheel on this kind of machine; on a CUDA machine use e.g. `make TORCH=torch reproduce`.
TORCH ?= torch==2.13.0
PROFILE ?= laptop
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install -q --disable-pip-version-check
# Two installs: what the notebooks need (make reproduce), and that plus the test, Ray and browser
# extras (make test). The full install satisfies both.
NOTEBOOKS_STAMP := $(VENV)/.installed-notebooks
STAMP := $(VENV)/.installed
export REWINDKIT_PROGRESS ?= 0

.PHONY: venv reproduce test unit browser benchmark clean

$(NOTEBOOKS_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) "$(TORCH)"
	$(PIP) -e ".[notebooks]"
	touch $(NOTEBOOKS_STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) "$(TORCH)"
	$(PIP) -e ".[notebooks,test,ray,browser]"
	touch $(STAMP) $(NOTEBOOKS_STAMP)

venv: $(STAMP)

reproduce: $(NOTEBOOKS_STAMP)
	$(BIN)/rewindkit notebooks --profile $(PROFILE) --executed-dir executed/$(PROFILE)

test: $(STAMP)
	$(BIN)/python -m pytest tests notebooks --nbval-lax --nbval-current-env -p no:cacheprovider -q

unit: $(STAMP)
	$(BIN)/python -m pytest tests

# The browser suite alone (also part of `make test`): every notebook in JupyterLab in headless Chromium.
# It skips, saying why at the end, when there is no Chromium (Debian: apt-get install chromium).
browser: $(STAMP)
	$(BIN)/python -m pytest tests/browser -p no:cacheprovider

benchmark: $(STAMP)
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf executed runs .pytest_cache
