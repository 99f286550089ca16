# The two quick-start commands are `make demo` (a real sweep against a local AWS emulator)
# and `make test` (lint, type checks and the whole test suite). Both install what they need.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# checkov pins boto3/botocore versions that conflict with ours: it gets a virtual environment
# of its own, and the template tests find it through CHECKOV.
CHECKOV_VENV := .tools/checkov
export CHECKOV := $(CURDIR)/$(CHECKOV_VENV)/bin/checkov

.PHONY: install install-test test lint typecheck pytest demo bench

install:
	$(PIP) install -q -e '.[local]'

install-test: $(CHECKOV)
	$(PIP) install -q -e '.[test,dev,local]'
	@sh scripts/system-deps.sh

$(CHECKOV):
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install -q 'checkov==3.3.30'

lint:
	$(PYTHON) -m ruff check .

typecheck:
	$(PYTHON) -m mypy

pytest:
	$(PYTHON) -m pytest -q

test: install-test lint typecheck pytest

demo: install
	@sh scripts/system-deps.sh
	$(PYTHON) -m check.quickstart.demo

bench: install-test
	$(PYTHON) -m bench
