# `make demo` and `make test` work on a fresh machine: they create .venv themselves.
VENV := .venv
BIN := $(VENV)/bin
DEMO_DB := demo.db

.PHONY: demo test lint bench clean

$(BIN)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

# The demo runs on its own SQLite file, the local SMTP sink and the worker, until Ctrl-C.
demo: export MENTORLUS_DATABASE__URL = sqlite:///$(DEMO_DB)
demo: $(BIN)/.installed
	rm -f $(DEMO_DB) $(DEMO_DB)-wal $(DEMO_DB)-shm
	$(BIN)/mentorlus demo load
	$(BIN)/mentorlus case list
	@echo
	$(BIN)/mentorlus case show $$($(BIN)/mentorlus --json case list --state active \
	  | $(BIN)/python -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
	@echo
	@echo "The emails go to the local SMTP sink: read them in ./mail/ (one .eml file each)."
	@echo "Ctrl-C stops the sink and the worker."
	$(BIN)/mentorlus smtp-sink & sink=$$!; \
	  trap 'kill $$sink 2>/dev/null' EXIT INT TERM; \
	  sleep 1; $(BIN)/mentorlus worker

lint: $(BIN)/.installed
	$(BIN)/ruff check lifecycle tests bench
	$(BIN)/mypy

test: lint
	$(BIN)/mentorlus check
	$(BIN)/pytest -q

bench: $(BIN)/.installed
	$(BIN)/python bench/transitions.py

clean:
	rm -rf $(VENV) $(DEMO_DB) $(DEMO_DB)-wal $(DEMO_DB)-shm
