# Two commands for a fresh machine with Python >= 3.11 and make: `make run` and `make test`.
VENV := .venv
BIN := $(VENV)/bin
PYTHON ?= python3
# What is installed, one stamp per need: `make run` installs only what serving needs; `make test` and
# `make lint` add the test and lint tools, and S3 support, which the tests exercise. Each stamp is
# remade when pyproject.toml changes, never otherwise.
SERVING := $(VENV)/.installed-serving
DEV := $(VENV)/.installed-dev
# Options of `mailroom serve` for `make run`, e.g. `make run SERVE_ARGS='--port 8001'`.
SERVE_ARGS ?=
# Test processes for `make test`, each with its own database; `make test TEST_PROCESSES=0` runs in one.
TEST_PROCESSES ?= 3

.PHONY: run test lint bench screenshots clean

$(BIN)/python:
	@echo "mailroom: creating the virtualenv $(VENV) with $(PYTHON)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(SERVING): pyproject.toml | $(BIN)/python
	@echo "mailroom: installing what serving needs into $(VENV)"
	$(BIN)/pip install -e .
	touch $@

# Everything serving needs comes with it, so `make run` after `make test` installs nothing more.
$(DEV): pyproject.toml | $(BIN)/python
	@echo "mailroom: installing the test and lint tools into $(VENV)"
	$(BIN)/pip install -e '.[dev,s3]'
	touch $@ $(SERVING)

run: $(SERVING)
	$(BIN)/mailroom serve $(SERVE_ARGS)

test: $(DEV)
	$(BIN)/pytest -n $(TEST_PROCESSES)

lint: $(DEV)
	$(BIN)/ruff check src tests migrations bench
	$(BIN)/ruff format --check src tests migrations bench
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: $(DEV)
	$(BIN)/python bench/attachments.py
	$(BIN)/python bench/send.py
	$(BIN)/python bench/api_latency.py
	$(BIN)/python bench/api.py
	$(BIN)/python bench/render.py
	$(BIN)/python bench/mime.py
	$(BIN)/python bench/events.py
	$(BIN)/python bench/report.py

# The workspace's pages as headless Chromium shows them, for the README (needs Debian's chromium and
# chromium-driver; the browser test skips without them, and then this fails).
SCREENSHOTS := docs/screenshots
screenshots: $(DEV)
	rm -f $(SCREENSHOTS)/campaigns.png $(SCREENSHOTS)/campaigns-phone.png $(SCREENSHOTS)/compose.png $(SCREENSHOTS)/compose-phone.png $(SCREENSHOTS)/report.png $(SCREENSHOTS)/report-phone.png
	MAILROOM_SCREENSHOTS=$(CURDIR)/$(SCREENSHOTS) $(BIN)/pytest -p no:cacheprovider -n 0 -rs tests/web/test_browser.py
	@test -f $(SCREENSHOTS)/campaigns.png -a -f $(SCREENSHOTS)/compose.png -a -f $(SCREENSHOTS)/report.png || { echo "mailroom: no screenshot was taken (see the skip reason above)" >&2; exit 1; }

clean:
	rm -rf $(VENV) var
