# make run: set up and start everything in one terminal.  make test: the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-requirements

# The suite needs PostgreSQL (workers in other processes share its database); override as you like.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/orderflow

.PHONY: install run migrate test lint format clean

$(STAMP): requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $(STAMP)

install: $(STAMP)

migrate: install
	$(BIN)/python manage.py migrate --noinput

run: install
	@$(BIN)/python manage.py check_broker
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/honcho start

test: install lint
	DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} $(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache
