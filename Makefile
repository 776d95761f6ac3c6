# The two commands a new machine needs: `make up` (local environment) and `make test` (whole suite).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-12)

.PHONY: up down test e2e lint docker browser venv

up: docker venv ## Bring up the local environment (Postgres with pg_cron + http, migrated)
	$(VENV)/bin/autosync env up

down: venv ## Remove the local environment (containers, volumes, state)
	$(VENV)/bin/autosync env down

test: docker browser venv ## Run the whole test suite against real containers (and a real Chromium)
	$(VENV)/bin/pytest

e2e: docker venv ## End to end on a fresh ephemeral environment, always removed afterwards
	$(VENV)/bin/autosync env test -- tests/env/test_end_to_end.py -q

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy sync_function infra

docker: ## Docker engine running and debian:trixie-slim present (idempotent, fast when ready)
	@scripts/ensure-docker

browser: ## Debian's chromium and chromium-driver for the page tests (idempotent, fast when present)
	@scripts/ensure-chromium

venv: $(STAMP)

$(STAMP): pyproject.toml
	@scripts/ensure-python "$(PYTHON)"
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev,infra,harness]'
	@rm -f $(VENV)/.installed-* && touch $@
