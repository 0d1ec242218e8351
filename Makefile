# Two commands: `make run` (set up + run the pipeline end to end on the
# embedded default) and `make test` (set up + the whole test suite).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q --disable-pip-version-check -c requirements.lock
WORKSPACE ?= workspace
# JupyterLab's server lives in a venv of its own; the notebooks run on the `servicetime` kernel from $(VENV).
# (Kept apart because the server's jsonschema format extras compile a grammar at every import of
# jsonschema, which Ray and KFP import: seconds in every step and Ray worker of a pipeline run.)
LAB_VENV := .venv-lab
LAB_SERVER := jupyterlab>=4.6,<5
# `make lab`: JupyterLab on loopback by default (reach it through an SSH tunnel); LAB_EXIT=1 stops it once it is up.
LAB_IP ?= 127.0.0.1
LAB_PORT ?= 8888
LAB_EXIT ?=
APT_PACKAGES := prometheus shellcheck cloud-init

.PHONY: run test bench lab setup setup-dev setup-lab system-deps lock audit compile golden lint clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip

$(VENV)/.installed: $(VENV)/bin/python pyproject.toml requirements.lock
	$(PIP) -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/bin/python pyproject.toml requirements.lock
	$(PIP) -e '.[dev,infra,notebooks]'
	touch $@ $(VENV)/.installed

# The lab: JupyterLab in $(LAB_VENV), the project's kernel (the notebooks extra: ipykernel) registered there.
$(LAB_VENV)/.installed: $(VENV)/.installed pyproject.toml requirements.lock
	test -x $(LAB_VENV)/bin/python || $(PYTHON) -m venv $(LAB_VENV)
	$(LAB_VENV)/bin/python -m pip install -q --disable-pip-version-check -c requirements.lock '$(LAB_SERVER)'
	$(PIP) -e '.[notebooks]'
	$(PY) -m ipykernel install --prefix $(LAB_VENV) --name servicetime --display-name "servicetime"
	touch $@

setup: $(VENV)/.installed
setup-dev: $(VENV)/.installed-dev
setup-lab: $(LAB_VENV)/.installed

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

test: setup-dev setup-lab system-deps
	$(PY) -m pytest

# The linter alone (make test runs it too, as tests/test_lint.py).
lint: setup-dev
	$(PY) -m ruff check .

bench: setup-dev
	$(PY) -m pytest tests/benchmarks -m bench -s -p no:cacheprovider

# JupyterLab on notebooks/ with the servicetime kernel; prints the URL with its token.
lab: setup-lab
	$(PY) -m components.labs.lab --jupyter $(LAB_VENV)/bin/python --ip $(LAB_IP) --port $(LAB_PORT) --notebooks notebooks $(if $(LAB_EXIT),--exit-after-start)

compile: setup
	$(VENV)/bin/servicetime --workspace $(WORKSPACE) compile --out $(WORKSPACE)/pipeline.yaml

# Rewrite the committed compiled pipelines (pipelines/compiled/) after an intended change; review the diff.
golden: setup
	$(PY) -m pipelines.golden

# Regenerate the pinned lock from the current environment (after changing pyproject).
lock: setup-dev setup-lab
	{ $(PY) -m pip freeze --exclude-editable; $(LAB_VENV)/bin/python -m pip freeze; } \
	  | sed -E 's/^torch==([0-9.]+)\+cpu$$/torch==\1/' | sort -fu > requirements.lock
	@dupes=$$(cut -d= -f1 requirements.lock | tr A-Z_ a-z- | uniq -d); \
	  if [ -n "$$dupes" ]; then echo "the two venvs pin different versions of: $$dupes" >&2; exit 1; fi

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
	rm -rf $(VENV) $(LAB_VENV) $(AUDIT_VENV) $(WORKSPACE) .pytest_cache
