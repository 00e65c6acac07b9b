# Two commands for a fresh machine with Python >= 3.11 and make: `make run` and `make test`.
VENV := .venv
BIN := $(VENV)/bin
PYTHON ?= python3

.PHONY: run test lint bench clean

$(BIN)/mailroom: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

run: $(BIN)/mailroom
	$(BIN)/mailroom serve

test: $(BIN)/mailroom
	$(BIN)/pytest

lint: $(BIN)/mailroom
	$(BIN)/ruff check src tests migrations bench
	$(BIN)/ruff format --check src tests migrations bench
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: $(BIN)/mailroom
	$(BIN)/python bench/attachments.py
	$(BIN)/python bench/send.py
	$(BIN)/python bench/api_latency.py
	$(BIN)/python bench/api.py
	$(BIN)/python bench/render.py
	$(BIN)/python bench/mime.py
	$(BIN)/python bench/events.py

clean:
	rm -rf $(VENV) var
