# Two commands: `make run` (set up + run the pipeline end to end on the
# embedded default) and `make test` (set up + the whole test suite).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q --disable-pip-version-check -c requirements.lock
WORKSPACE ?= workspace
# `make lab`: JupyterLab on loopback by default (reach it through an SSH tunnel); LAB_EXIT=1 stops it once it is up.
LAB_IP ?= 127.0.0.1
LAB_PORT ?= 8888
LAB_EXIT ?=
APT_PACKAGES := prometheus shellcheck cloud-init

.PHONY: run test bench lab setup setup-dev system-deps lock audit compile golden lint clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip

$(VENV)/.installed: $(VENV)/bin/python pyproject.toml requirements.lock
	$(PIP) -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/bin/python pyproject.toml requirements.lock
	$(PIP) -e '.[dev,infra,notebooks]'
	touch $@ $(VENV)/.installed

# The notebooks extra, and the `servicetime` kernel inside the venv (--sys-prefix: nothing in ~/.local).
$(VENV)/.installed-lab: $(VENV)/bin/python pyproject.toml requirements.lock
	$(PIP) -e '.[notebooks]'
	$(PY) -m ipykernel install --sys-prefix --name servicetime --display-name "servicetime"
	touch $@ $(VENV)/.installed

setup: $(VENV)/.installed
setup-dev: $(VENV)/.installed-dev

# Debian packages the tests use (promtool, shellcheck, cloud-init schema).
system-deps:
	@missing=""; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	command -v shellcheck >/dev/null || missing="$$missing shellcheck"; \
	command -v cloud-init >/dev/null || missing="$$missing cloud-init"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

run: setup
	$(VENV)/bin/servicetime --workspace $(WORKSPACE) run

test: setup-dev system-deps
	$(PY) -m pytest

# The linter alone (make test runs it too, as tests/test_lint.py).
lint: setup-dev
	$(PY) -m ruff check .

bench: setup-dev
	$(PY) -m pytest tests/benchmarks -m bench -s -p no:cacheprovider

# JupyterLab on notebooks/ with the servicetime kernel; prints the URL with its token.
lab: $(VENV)/.installed-lab
	$(PY) -m components.labs.lab --ip $(LAB_IP) --port $(LAB_PORT) --notebooks notebooks $(if $(LAB_EXIT),--exit-after-start)

compile: setup
	$(VENV)/bin/servicetime --workspace $(WORKSPACE) compile --out $(WORKSPACE)/pipeline.yaml

# Rewrite the committed compiled pipelines (pipelines/compiled/) after an intended change; review the diff.
golden: setup
	$(PY) -m pipelines.golden

# Regenerate the pinned lock from the current environment (after changing pyproject).
lock: setup-dev $(VENV)/.installed-lab
	$(PY) -m pip freeze --exclude-editable | sed -E 's/^torch==([0-9.]+)\+cpu$$/torch==\1/' > requirements.lock

# Known vulnerabilities in every pinned package of the lock, from PyPI's advisory data. pip-audit lives in
# its own venv so that it does not join the project's lock; it needs the network and says which packages it
# could not check (--strict: a package it could not check fails the audit, so a partial audit never passes).
AUDIT_VENV := .venv-audit
PIP_AUDIT := pip-audit==2.10.1
audit:
	@test -x $(AUDIT_VENV)/bin/pip-audit || { $(PYTHON) -m venv $(AUDIT_VENV) && \
	  $(AUDIT_VENV)/bin/python -m pip install -q --disable-pip-version-check '$(PIP_AUDIT)'; }
	$(AUDIT_VENV)/bin/pip-audit --requirement requirements.lock --no-deps --disable-pip --vulnerability-service pypi \
	  --progress-spinner off --desc off --strict

clean:
	rm -rf $(VENV) $(AUDIT_VENV) $(WORKSPACE) .pytest_cache
