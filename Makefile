# Two commands on a fresh machine with only python3:  make run  and  make test
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck pytest bench clean

# Debian packages the tests use: systemd-analyze checks deploy/sluiceway.service, and the
# dashboard's browser test drives chromium (Playwright with executable_path=/usr/bin/chromium)
SYSTEM_DEPS := .venv/.system-deps
DEBIAN_PACKAGES := systemd chromium

$(SYSTEM_DEPS):
	@if ! command -v systemd-analyze >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEBIAN_PACKAGES) >/dev/null; \
	  else echo "note: systemd-analyze or chromium missing and not root: their tests will skip"; fi; fi
	@mkdir -p $(VENV) && touch $@

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# load one day of the sample orders, then run the service (Ctrl-C stops it cleanly);
# warehouse_check fires every minute, so runs appear within a minute: sluiceway runs
run: $(STAMP)
	$(BIN)/sluiceway run etl --flows sample_flows
	exec $(BIN)/sluiceway serve --flows sample_flows

test: $(STAMP) $(SYSTEM_DEPS)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest -q --durations=15

bench: $(STAMP)
	$(BIN)/python bench/engine.py
	$(BIN)/python bench/cli.py
	$(BIN)/python bench/scheduler.py
	$(BIN)/python bench/scale.py
	$(BIN)/python bench/files.py
	$(BIN)/python bench/alerts.py
	$(BIN)/python bench/notifiers.py
	$(BIN)/python bench/api.py
	$(BIN)/python bench/metrics.py
	$(BIN)/python bench/dashboard.py --cache .bench-cache
	$(BIN)/python bench/log_search.py
	$(BIN)/python bench/stream.py
	$(BIN)/python bench/dask_executor.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
