# The two quick-start commands are `make demo` (a real sweep against a local AWS emulator)
# and `make test` (lint, type checks and the whole test suite). Both install what they need
# into a virtual environment, `.venv`: Debian's own python3 is externally managed (PEP 668),
# so nothing is installed into the system Python. scripts/venv.sh creates it (and installs
# Debian's python3-venv when the venv module is missing).
PYTHON3 ?= python3
VENV ?= .venv
PYTHON := $(VENV)/bin/python
PIP := $(PYTHON) -m pip
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# Commands run by the recipes (and the tests' stand-in scripts, `#!/usr/bin/env python3`)
# find the environment's python first.
export VIRTUAL_ENV := $(abspath $(VENV))
export PATH := $(abspath $(VENV))/bin:$(PATH)
# checkov pins boto3/botocore versions that conflict with ours: it gets a virtual environment
# of its own, and the template tests find it through CHECKOV.
CHECKOV_VENV := .tools/checkov
export CHECKOV := $(CURDIR)/$(CHECKOV_VENV)/bin/checkov

.PHONY: venv install install-test test lint typecheck pytest demo bench test-aarch64

$(PYTHON):
	@sh scripts/venv.sh $(PYTHON3) $(VENV)

venv: $(PYTHON)

# Stamps inside the environment: installed again when the metadata changes or the
# environment is recreated.
# setup.py builds the tracer's compiled stop loop (sidecar/stoploop): a C compiler and the
# Python headers first.
$(VENV)/.installed-local: setup.cfg setup.py pyproject.toml sidecar/stoploop/_stoploop.c | $(PYTHON)
	@sh scripts/system-deps.sh build $(PYTHON)
	$(PIP) install -q -e '.[local]'
	@touch $@

$(VENV)/.installed-test: setup.cfg setup.py pyproject.toml sidecar/stoploop/_stoploop.c | $(PYTHON)
	@sh scripts/system-deps.sh build $(PYTHON)
	$(PIP) install -q -e '.[test,dev,local]'
	@touch $@ $(VENV)/.installed-local

install: $(VENV)/.installed-local

install-test: $(VENV)/.installed-test $(CHECKOV)
	@sh scripts/system-deps.sh test

$(CHECKOV):
	@sh scripts/venv.sh $(PYTHON3) $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install -q 'checkov==3.3.30'

lint: install-test
	$(PYTHON) -m ruff check .

typecheck: install-test
	$(PYTHON) -m mypy

pytest: install-test
	$(PYTHON) -m pytest -q

test: lint typecheck pytest

# The seccomp-filter injection on a real arm64 kernel: scripts/aarch64-vm builds a guest from
# Debian's arm64 packages and boots it in qemu (software emulation). `make test` runs the
# injection tests there (tests/sidecar/test_inject_aarch64.py, ~2.5 min); this target runs
# every guest test, also the three that trace with a stop per syscall (4 to 8 min emulated).
test-aarch64: install-test
	$(PYTHON) scripts/aarch64-vm/build.py
	$(PYTHON) scripts/aarch64-vm/run.py

demo: install
	@sh scripts/system-deps.sh demo
	$(PYTHON) -m check.quickstart.demo

bench: install-test
	$(PYTHON) -m bench
