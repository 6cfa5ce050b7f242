# The front door: `make demo`, `make test`, `make dev`, `make lint`, `make bench`.
# Every target sets itself up: it creates .venv when missing and installs the project.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SIZE ?= S

.PHONY: install prepare demo test dev lint format bench clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# A DuckDB 1.x client, like the ones BI tools bundle: tests open the serving snapshot with it.
DUCKDB1 := .venv-duckdb1
$(DUCKDB1)/.installed:
	$(PYTHON) -m venv $(DUCKDB1)
	$(DUCKDB1)/bin/pip install --quiet 'duckdb>=1.4,<1.5'
	touch $@

# Parse the dbt project into target/manifest.json (Dagster reads it) and set up $DAGSTER_HOME.
prepare: install $(DUCKDB1)/.installed
	$(BIN)/python -c "from orchestration.prepare import prepare; from common.settings import load_settings; prepare(load_settings())"

# The batch tier (30 days generated, loaded, built), then the real-time tier: events sent
# through the API and visible in the live figures within seconds.
demo: prepare
	$(BIN)/sluice demo
	$(BIN)/sluice live-demo --seconds 15

test: prepare
	$(BIN)/pytest

dev: prepare
	$(BIN)/sluice dev

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/sqlfluff lint dbt_project
	$(BIN)/mypy
	$(BIN)/lint-imports

# Benchmarks against plain baselines: SIZE=S (~1M events, minutes), M (~10M), L (~50M).
# Writes docs/benchmarks.md (the size's section) and bench/results/$(SIZE).json.
bench: prepare
	$(BIN)/python -m bench --size $(SIZE)

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf data/landing data/warehouse data/serving data/reports data/dlt data/dbt data/dagster data/start_date dbt_project/target
