# OpenDSO: `make run` starts the control room, `make test` runs every check.
# Both create or refresh .venv with a Python >= 3.12 found on this machine.

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

FIND_PYTHON = for p in python3.13 python3.12 $$(ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.1[2-9]*/bin/python3 2>/dev/null | sort -rV); do \
	if command -v "$$p" >/dev/null 2>&1 && "$$p" -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; then \
	command -v "$$p"; break; fi; done

.PHONY: run test bench lint typecheck unit venv clean browser test-tools

$(STAMP): pyproject.toml
	@py="$$($(FIND_PYTHON))"; \
	if [ -z "$$py" ]; then echo "OpenDSO needs Python >= 3.12: install python3.12 or python3.13 (or one under pyenv's versions folder)" >&2; exit 1; fi; \
	if [ ! -x $(PY) ] || ! $(PY) -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then \
		rm -rf $(VENV); "$$py" -m venv $(VENV); fi
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,iec104]'
	@touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/opendso run

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests $(wildcard benchmarks)
	$(VENV)/bin/ruff format --check src tests $(wildcard benchmarks)
	$(VENV)/bin/lint-imports --no-cache

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# The web UI tests drive Debian's Chromium through Playwright (no browser download), and the audit
# forwarding tests send to a real rsyslog collector over TLS: install them when they are missing and
# we may (root, or CI); otherwise say how.
TEST_TOOLS := chromium:/usr/bin/chromium rsyslog:/usr/sbin/rsyslogd rsyslog-gnutls:/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so

test-tools:
	@missing=""; for pair in $(TEST_TOOLS); do pkg=$${pair%%:*}; file=$${pair#*:}; \
	  [ -e "$$file" ] || dpkg -s "$$pkg" >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$CI" = true ] || [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && apt-get install -y -qq $$missing >/dev/null) || echo "could not install$$missing" >&2; \
	  else echo "some tests need:$$missing (sudo apt-get install$$missing)" >&2; fi; fi

browser: test-tools

unit: $(STAMP) test-tools
	$(VENV)/bin/pytest -q

test: lint typecheck unit

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
