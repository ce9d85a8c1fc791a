# clipmed: `make demo` and `make test` work on a fresh machine with only Python >= 3.11.
# Both create .venv and install on first use (again whenever a requirements file changes).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
WORKDIR ?= workdirs/demo
DEMO_ARGS ?=
PYTEST_ARGS ?=
# Test processes (pytest-xdist): one per core by default. `worksteal`: an idle worker takes tests
# queued on a busy one, so the long tests (scheduled first, tests/conftest.py) do not end up
# queued behind each other on one worker.
TEST_WORKERS ?= auto

.PHONY: demo test install install-dev clean help

help:
	@echo "make demo   - train and evaluate the demo model on SynthCXR (creates .venv on first use)"
	@echo "make test   - run the test suite (installs the dev extras on first use)"
	@echo "make clean  - remove .venv, the generated data and the demo workdir"

# pip shows its progress on the first install only; later updates (a requirements file changed)
# are quiet (`-q`: errors still show).
$(VENV)/.installed: requirements.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "clipmed needs Python >= 3.11, found " + sys.version.split()[0]'
	@if [ -x $(PY) ]; then echo "Updating .venv: requirements.txt changed."; q=-q; \
	else echo "Creating .venv and installing clipmed's requirements (first run only, a few minutes)."; \
	  $(PYTHON) -m venv $(VENV) && q=; fi; \
	$(PY) -m pip install $$q --disable-pip-version-check --upgrade pip && \
	$(PY) -m pip install $$q --disable-pip-version-check -r requirements.txt
	@touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt requirements-nodeps.txt
	@if [ -f $@ ]; then echo "Updating the test extras: requirements-dev.txt changed."; q=-q; \
	else echo "Installing the test extras (first run only)."; q=; fi; \
	$(PY) -m pip install $$q --disable-pip-version-check -r requirements-dev.txt && \
	$(PY) -m pip install $$q --disable-pip-version-check --no-deps -r requirements-nodeps.txt
	@touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: $(VENV)/.installed
	@echo "make demo: training and evaluating the demo model on SynthCXR into $(WORKDIR) (configs/demo.py)."
	@$(PY) -m clipmed.main --config=configs/demo.py$(if $(DEMO_ARGS),:$(DEMO_ARGS)) --workdir=$(WORKDIR)

test: $(VENV)/.installed-dev
	@echo "make test: running the test suite with pytest ($(TEST_WORKERS) worker processes)."
	@$(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) data $(WORKDIR)
