# `make test` is the whole test suite on a fresh Debian machine: it installs what is missing, then lints and tests.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
BASE_PYTHON ?= python3
# Debian 12 and Ubuntu >= 23.04 mark their own Python as externally managed (PEP 668): pip refuses to install into
# it. There the project gets a virtual environment of its own (.venv, git-ignored); elsewhere (a venv, conda, pyenv)
# the Python at hand is used. `make PYTHON=...` picks one explicitly.
MANAGED := $(shell $(BASE_PYTHON) -c 'import os, sys, sysconfig; print(int(sys.prefix == sys.base_prefix and os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED"))))' 2>/dev/null)
ifeq ($(MANAGED),1)
PYTHON ?= .venv/bin/python
VENV := .venv/bin/python
else
PYTHON ?= $(BASE_PYTHON)
VENV :=
endif

.PHONY: test test-fast system-deps install lint pytest bench run

test: system-deps install lint pytest

# Debian's Chromium (the browser tests drive it; never a downloaded one), PostgreSQL 15 and nginx (started by tests);
# python3-venv where the project needs a virtual environment and Debian's Python cannot make one yet.  Installed
# with a policy-rc.d that forbids starting services (Debian's own mechanism), so that no postgresql or nginx service
# starts listening: the tests start their own, on free ports, and stop them.
system-deps:
	@missing=""; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	[ -x /usr/lib/postgresql/15/bin/initdb ] || missing="$$missing postgresql"; \
	command -v nginx >/dev/null || missing="$$missing nginx"; \
	if [ -n "$(VENV)" ] && ! $(BASE_PYTHON) -c 'import ensurepip' 2>/dev/null; then missing="$$missing python3-venv"; fi; \
	if [ -n "$$missing" ]; then \
		policy=/usr/sbin/policy-rc.d; own=""; \
		if [ ! -e $$policy ]; then \
			printf '#!/bin/sh\nexit 101\n' | $(SUDO) tee $$policy >/dev/null && $(SUDO) chmod 755 $$policy && own=1; \
		fi; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-upgrade $$missing; \
		status=$$?; [ -z "$$own" ] || $(SUDO) rm -f $$policy; exit $$status; \
	fi

.venv/bin/python:
	$(BASE_PYTHON) -m venv .venv

install: $(VENV)
	$(PYTHON) -m pip install -q -e ".[test]"

lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

# Two xdist workers, a module to a worker (its module-scoped servers are started once), in the order of
# tests/conftest.py (the longest modules first; xdist would otherwise start with the modules that have most tests).
PYTEST_WORKERS ?= 2
XDIST = -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder
pytest:
	$(PYTHON) -m pytest $(XDIST)

# The inner loop: no browser, no PostgreSQL, nothing marked slow (no system packages needed).
test-fast: install
	$(PYTHON) -m pytest -m "not ui and not postgres and not slow" -q $(XDIST)

run: $(VENV)
	$(PYTHON) -m pip install -q -e . && $(PYTHON) -m panel serve realtime_dashboard.py --show

bench: $(VENV)
	$(PYTHON) -m pip install -q -e ".[test,bench]" && $(PYTHON) -m benchmarks.run
