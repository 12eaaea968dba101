# `make demo` and `make test` work on a fresh machine: they create .venv themselves.
VENV := .venv
BIN := $(VENV)/bin
DEMO_DB := demo.db

.PHONY: demo test lint audit bench soak clean

$(BIN)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

# The demo runs on its own SQLite file: the web server, the worker and the local SMTP sink,
# until Ctrl-C.
demo: export MENTORLUS_DATABASE__URL = sqlite:///$(DEMO_DB)
demo: $(BIN)/.installed
	rm -f $(DEMO_DB) $(DEMO_DB)-wal $(DEMO_DB)-shm
	$(BIN)/mentorlus demo load
	$(BIN)/mentorlus case list
	@echo
	@echo "Open http://127.0.0.1:8000/ — the console is at /console."
	@echo "Log in as coordinator triinu.allik@example.ee or committee member heiki.sild@example.ee,"
	@echo "password demo-parool-2026. Every email lands in ./mail/ (one .eml file each)."
	@echo "Ctrl-C stops the web server, the worker and the sink."
	@echo
	$(BIN)/mentorlus smtp-sink & sink=$$!; \
	  $(BIN)/mentorlus worker & worker=$$!; \
	  trap 'kill $$sink $$worker 2>/dev/null' EXIT INT TERM; \
	  sleep 1; $(BIN)/mentorlus serve

lint: $(BIN)/.installed
	$(BIN)/ruff check lifecycle tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

test: lint
	$(BIN)/mentorlus check
	$(BIN)/pytest -q

# Known vulnerabilities in the installed packages, from PyPI's vulnerability data. --strict:
# a package the service cannot look up fails the audit instead of passing unaudited.
audit: $(BIN)/.installed
	$(BIN)/pip-audit --local --skip-editable --strict --vulnerability-service pypi \
	  --progress-spinner off

bench: $(BIN)/.installed
	$(BIN)/python bench/transitions.py

# The reliability suite's long part (docs/reliability.md): PostgreSQL with two web processes
# and two workers under load and repeated faults for SOAK_SECONDS, then the SQLite faults.
# Needs PostgreSQL's server binaries, and root for the full-disk tmpfs. `make test` runs the
# short form (tests/test_reliability.py).
SOAK_SECONDS ?= 600
soak: $(BIN)/.installed
	$(BIN)/python -m tests.reliability.soak --seconds $(SOAK_SECONDS)

clean:
	rm -rf $(VENV) $(DEMO_DB) $(DEMO_DB)-wal $(DEMO_DB)-shm
