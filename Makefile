# `make test` is the whole test suite on a fresh Debian machine: it installs what is missing, then lints and tests.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTHON ?= python3

.PHONY: test system-deps install lint pytest bench run

test: system-deps install lint pytest

# Debian's Chromium (the browser tests drive it; never a downloaded one), PostgreSQL 15 and nginx (started by tests).
system-deps:
	@if ! command -v chromium >/dev/null || [ ! -x /usr/lib/postgresql/15/bin/initdb ] || ! command -v nginx >/dev/null; then \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-upgrade chromium postgresql nginx; \
	fi

install:
	$(PYTHON) -m pip install -q -e ".[test]"

lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

pytest:
	$(PYTHON) -m pytest

run:
	$(PYTHON) -m pip install -q -e . && $(PYTHON) -m panel serve realtime_dashboard.py --show

bench:
	$(PYTHON) -m pip install -q -e ".[test,bench]" && $(PYTHON) -m benchmarks.run
