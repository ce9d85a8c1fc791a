# clipmed: `make demo` and `make test` work on a fresh machine with only Python >= 3.11.
# Both create .venv and install on first use (again whenever a requirements file changes).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
WORKDIR ?= workdirs/demo
DEMO_ARGS ?=
PYTEST_ARGS ?=
# Test processes (pytest-xdist): one per core by default.
TEST_WORKERS ?= auto

.PHONY: demo test install install-dev clean help

help:
	@echo "make demo   - train and evaluate the demo model on SynthCXR (creates .venv on first use)"
	@echo "make test   - run the test suite (installs the dev extras on first use)"
	@echo "make clean  - remove .venv, the generated data and the demo workdir"

$(VENV)/.installed: requirements.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "clipmed needs Python >= 3.11, found " + sys.version.split()[0]'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -r requirements.txt
	@touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(PY) -m pip install -r requirements-dev.txt
	$(PY) -m pip install --no-deps -r requirements-nodeps.txt
	@touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: $(VENV)/.installed
	$(PY) -m clipmed.main --config=configs/demo.py$(if $(DEMO_ARGS),:$(DEMO_ARGS)) --workdir=$(WORKDIR)

test: $(VENV)/.installed-dev
	$(PY) -m pytest -q -n $(TEST_WORKERS) $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) data $(WORKDIR)
