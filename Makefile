# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint format bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

run: $(STAMP)  ## serve media/ on http://127.0.0.1:8080
	$(BIN)/streamer serve

test: lint  ## lint, then the whole test suite on each event loop
	STREAMER_LOOP=asyncio $(BIN)/pytest
	STREAMER_LOOP=uvloop $(BIN)/pytest -q

lint: $(STAMP)  ## ruff (lint + format check) and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)  ## fan-out benchmark, streamer vs queue-per-subscriber baseline
	$(BIN)/python bench/fanout.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
