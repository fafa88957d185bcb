# make run: set up and start everything in one terminal.  make test: the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-requirements

# Where make run's processes (web, prefork workers, beat) write their metrics for /metrics to add
# up; emptied at each start. A PROMETHEUS_MULTIPROC_DIR in the environment or .env is used instead.
RUN_METRICS_DIR := .run/metrics
# A variable's value as the settings read it (the environment's, else .env's): for the ones the
# Procfile needs before any settings are read.
SETTING := $(BIN)/python -c 'import sys; from orderflow.configuration import environment_value; print(environment_value(sys.argv[1]))'

# The suite needs PostgreSQL (workers in other processes share its database); override as you like.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/orderflow

.PHONY: install run migrate test faults lint format bench bench-scale bench-load clean

$(STAMP): requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $(STAMP)

install: $(STAMP)

migrate: install
	$(BIN)/python manage.py migrate --noinput

# honcho -e /dev/null: every process reads .env through the settings, as check_broker and
# migrate do, the environment winning; honcho's own .env would override the environment.
run: install
	@$(BIN)/python manage.py check_broker
	$(BIN)/python manage.py migrate --noinput
	rm -rf $(RUN_METRICS_DIR) && mkdir -p $(RUN_METRICS_DIR)
	metrics=$$($(SETTING) PROMETHEUS_MULTIPROC_DIR) && port=$$($(SETTING) WEB_PORT) && \
	PROMETHEUS_MULTIPROC_DIR=$${metrics:-$(CURDIR)/$(RUN_METRICS_DIR)} WEB_PORT=$${port:-8000} $(BIN)/honcho start -e /dev/null

test: install lint
	DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} $(BIN)/pytest
	@echo "Again on SQLite, the default database of a quick local start (the tests that need no worker):"
	DATABASE_URL=sqlite:///db.sqlite3 $(BIN)/pytest -q -m "not integration"

# Only the fault tests (a few minutes): each stops or kills something of its own and prints what it measured.
faults: install
	DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} $(BIN)/pytest tests/notifications/test_faults.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Benchmarks (ratios measured side by side, a few minutes each) on their own database, Redis dbs and workers.
bench: install
	$(BIN)/python bench/ratelimit.py
	$(BIN)/python bench/throughput.py
	$(BIN)/python bench/order_cost.py
	$(BIN)/python bench/pool_process_start.py
	$(BIN)/python bench/recycle.py

# The admin, sweep and cleanup at 1,000,000 notifications and 100,000 dead letters (about 10 minutes).
bench-scale: install
	$(BIN)/python bench/admin_scale.py

# The API under 16 concurrent clients with notifications on and off, 60 s each, then 10,000 orders
# end to end through gunicorn, workers, the Twilio double and an SMTP server (about 6 minutes).
bench-load: install
	$(BIN)/python bench/load.py

clean:
	rm -rf $(VENV) .pytest_cache
