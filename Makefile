# `make demo` and `make test` work on a fresh machine: they create .venv themselves.
VENV := .venv
BIN := $(VENV)/bin
DEMO_DB := demo.db

.PHONY: demo test lint audit bench bench-postgres soak clean

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

# Every benchmark on SQLite; docs/performance.md records their figures and targets.
bench: $(BIN)/.installed
	$(BIN)/python bench/transitions.py
	$(BIN)/python bench/timers.py
	$(BIN)/python bench/delivery.py
	$(BIN)/python bench/web.py

# The PostgreSQL variants on a throwaway cluster, started the way .ci/run starts its own (as
# the postgres user, which needs root; loopback, fsync off) on a free port, and removed
# afterwards, also when a benchmark fails or Ctrl-C stops it.
bench-postgres: $(BIN)/.installed
	@set -e; \
	pg_bin=$$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1); \
	pg_data=$$(mktemp -d /tmp/mentorlus-bench-pg.XXXXXX); \
	trap 'runuser -u postgres -- "$$pg_bin/pg_ctl" -D "$$pg_data" -m immediate stop \
	  >/dev/null 2>&1; rm -rf "$$pg_data"' EXIT; \
	trap 'exit 130' INT TERM; \
	port=$$($(BIN)/python -c 'import socket; s = socket.socket(); \
	  s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'); \
	chown postgres "$$pg_data"; \
	runuser -u postgres -- "$$pg_bin/initdb" -D "$$pg_data" -A trust -U postgres >/dev/null; \
	runuser -u postgres -- "$$pg_bin/pg_ctl" -D "$$pg_data" -l "$$pg_data/log" -w \
	  -o "-p $$port -k /tmp -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null \
	  || { cat "$$pg_data/log"; exit 1; }; \
	url="postgresql+psycopg://postgres@127.0.0.1:$$port/postgres"; \
	echo "PostgreSQL on port $$port"; \
	$(BIN)/python bench/transitions.py --postgres "$$url"; \
	$(BIN)/python bench/timers.py --postgres "$$url"; \
	$(BIN)/python bench/delivery.py --postgres "$$url" --workers 2

# The reliability suite's long part (docs/reliability.md): PostgreSQL with two web processes
# and two workers under load and repeated faults for SOAK_SECONDS, then the SQLite faults.
# Needs PostgreSQL's server binaries, and root for the full-disk tmpfs. `make test` runs the
# short form (tests/test_reliability.py).
SOAK_SECONDS ?= 600
soak: $(BIN)/.installed
	$(BIN)/python -m tests.reliability.soak --seconds $(SOAK_SECONDS)

clean:
	rm -rf $(VENV) $(DEMO_DB) $(DEMO_DB)-wal $(DEMO_DB)-shm
