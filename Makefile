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

demo: $(BIN)/.installed
	rm -f $(DEMO_DB) $(DEMO_DB)-wal $(DEMO_DB)-shm
	MENTORLUS_DATABASE__URL=sqlite:///$(DEMO_DB) $(BIN)/mentorlus demo load
	MENTORLUS_DATABASE__URL=sqlite:///$(DEMO_DB) $(BIN)/mentorlus case list
	@echo
	MENTORLUS_DATABASE__URL=sqlite:///$(DEMO_DB) $(BIN)/mentorlus case show $$(MENTORLUS_DATABASE__URL=sqlite:///$(DEMO_DB) $(BIN)/mentorlus --json case list --state active | $(BIN)/python -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')

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
