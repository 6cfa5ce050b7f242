"""The Spark engine's load: the same landing files land on the lake (dlt's filesystem
destination, Parquet) as in the DuckDB warehouse, raw events in one folder per event day.

Real files and real dlt, no Spark: the lake is read with DuckDB as Spark reads it, a
Hive-partitioned Parquet folder (ingestion/pipeline.py).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest

from common.settings import RAW_EVENTS_TABLE, RAW_REJECTED_TABLE, Settings, load_settings
from ingestion.generator import generate
from ingestion.landing import landing_source
from ingestion.landing.helpers import LoadReport, new_landing_files
from ingestion.pipeline import (
    LAKE_PIPELINE_NAME,
    LOADER_FILE_FORMAT,
    PIPELINE_NAME,
    lake_table_dir,
    make_pipeline,
    pipeline_name,
    reset_local_state,
)
from tests.ingestion.test_landing_load import GOOD, write_lines

FIRST = dt.date(2026, 3, 1)
DAYS = 7
USERS = 40

# One file with lines that break the contract between valid ones, beside the generated days.
MIXED = [
    json.dumps(GOOD[0]),
    '{"type": "track", "userId": "u1", "event": "x", "timestamp": "2026-03-0',
    json.dumps({"type": "teleport", "userId": "u1", "timestamp": "2026-03-01T00:00:00Z"}),
    json.dumps(GOOD[1]),
]

# Every column of an accepted message, timestamps as UTC text; the JSON columns are parsed
# in Python, so equal documents compare equal whatever their spacing.
EVENT_COLUMNS = (
    "message_id, type, event, name, user_id, anonymous_id, "
    "strftime(timestamp, '%Y-%m-%d %H:%M:%S.%f') as timestamp, "
    "strftime(sent_at, '%Y-%m-%d %H:%M:%S.%f') as sent_at, "
    "strftime(received_at, '%Y-%m-%d %H:%M:%S.%f') as received_at, "
    "_source, _source_file, _line_number, "
    "cast(properties as varchar), cast(traits as varchar), cast(context as varchar)"
)
REJECTED_COLUMNS = "_source, _source_file, _line_number, reason, raw_line"


def load(settings: Settings) -> LoadReport:
    """One load as the Dagster asset runs it: local state reset, restored from the destination."""
    report = LoadReport()
    pipeline = make_pipeline(settings)
    reset_local_state(pipeline, settings)
    info = pipeline.run(
        landing_source(str(settings.landing_dir), report), loader_file_format=LOADER_FILE_FORMAT
    )
    info.raise_on_failed_jobs()
    return report


def lake(settings: Settings, sql: str) -> list[tuple[Any, ...]]:
    """``sql`` over the views ``events`` and ``rejected_events`` of the lake's Parquet files."""
    events = lake_table_dir(settings, RAW_EVENTS_TABLE)
    rejected = lake_table_dir(settings, RAW_REJECTED_TABLE)
    with duckdb.connect() as con:
        con.execute("set TimeZone = 'UTC'")
        con.execute(
            "create view events as select * from "
            f"read_parquet('{events}/*/*.parquet', hive_partitioning = true)"
        )
        con.execute(f"create view rejected_events as select * from '{rejected}/*.parquet'")
        return con.execute(sql).fetchall()


def warehouse(settings: Settings, sql: str) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        con.execute("set TimeZone = 'UTC'")
        return con.execute(sql).fetchall()


def parsed(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Rows of EVENT_COLUMNS with their last three (JSON text) parsed."""
    return sorted(
        (*row[:-3], *(json.loads(text) if text is not None else None for text in row[-3:]))
        for row in rows
    )


@dataclass(frozen=True)
class Loaded:
    duck: Settings
    spark: Settings
    duck_report: LoadReport
    spark_report: LoadReport


def _settings(root: Path, engine: str) -> Settings:
    return load_settings(
        {
            "SLUICE_DATA_DIR": str(root / engine),
            "SLUICE_START_DATE": FIRST.isoformat(),
            "SLUICE_WAREHOUSE_ENGINE": engine,
        }
    )


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loaded]:
    """The generated days and MIXED, loaded once on each engine into its own data dir."""
    root = tmp_path_factory.mktemp("engines")
    duck, spark = _settings(root, "duckdb"), _settings(root, "spark")
    for settings in (duck, spark):
        generate(settings.landing_dir, FIRST, DAYS, USERS, seed=3)
        write_lines(settings.landing_dir / "sources" / "web" / "mixed.jsonl", MIXED)
    yield Loaded(duck, spark, load(duck), load(spark))


def test_both_engines_land_the_same_accepted_messages(loaded: Loaded) -> None:
    sql = f"select {EVENT_COLUMNS} from {{table}}"
    duck = parsed(warehouse(loaded.duck, sql.format(table="raw.events")))
    spark = parsed(lake(loaded.spark, sql.format(table="events")))
    assert len(duck) == loaded.duck_report.loaded_rows > 0
    assert spark == duck
    assert loaded.spark_report.events_by_date == loaded.duck_report.events_by_date


def test_both_engines_quarantine_the_same_lines(loaded: Loaded) -> None:
    sql = f"select {REJECTED_COLUMNS} from {{table}} order by all"
    duck = warehouse(loaded.duck, sql.format(table="raw.rejected_events"))
    spark = lake(loaded.spark, sql.format(table="rejected_events"))
    # The generator's malformed lines and MIXED's two.
    assert len(duck) == loaded.duck_report.rejected_rows > 2
    assert spark == duck
    mixed = [row[2:4] for row in spark if row[1] == "sources/web/mixed.jsonl"]
    assert mixed == [(2, "malformed JSON"), (3, 'unknown type "teleport"')]
    landed = lake(
        loaded.spark,
        "select _line_number from events where _source_file = 'sources/web/mixed.jsonl' order by 1",
    )
    assert landed == [(1,), (4,)]


def test_each_event_day_has_a_folder_holding_only_its_rows(loaded: Loaded) -> None:
    events = lake_table_dir(loaded.spark, RAW_EVENTS_TABLE)
    folders = {path.name: path for path in events.glob("event_date=*")}
    by_date = loaded.spark_report.events_by_date
    assert sorted(folders) == [f"event_date={day}" for day in sorted(by_date)]
    assert (events / "_delta_log").is_dir()
    for day, count in by_date.items():
        # Read without the folder's name: the day is the rows' own UTC date.
        rows = lake(
            loaded.spark,
            "select cast(timestamp as date), count(*) from "
            f"read_parquet('{folders[f'event_date={day}']}/*.parquet') group by all",
        )
        assert rows == [(dt.date.fromisoformat(day), count)]
    # The DuckDB warehouse's raw.events has no such column: only the lake is partitioned.
    columns = warehouse(
        loaded.duck,
        "select column_name from information_schema.columns "
        "where table_schema = 'raw' and table_name = 'events'",
    )
    assert ("event_date",) not in columns


def test_the_engines_keep_their_own_pipelines(loaded: Loaded) -> None:
    assert pipeline_name(loaded.spark) == LAKE_PIPELINE_NAME
    assert pipeline_name(loaded.duck) == PIPELINE_NAME
    assert not loaded.spark.warehouse_path.exists(), "the Spark engine wrote a DuckDB file"
    assert not loaded.duck.lake_dir.exists(), "the DuckDB engine wrote a lake"


def test_on_the_lake_each_file_loads_exactly_once(make_settings) -> None:
    settings = make_settings(FIRST, SLUICE_WAREHOUSE_ENGINE="spark")
    landing = settings.landing_dir
    write_lines(landing / "a.jsonl", [json.dumps(m) for m in GOOD])
    name = pipeline_name(settings)
    assert new_landing_files(landing, settings.dlt_dir, name) == ["a.jsonl"]
    first = load(settings)
    assert (first.loaded_rows, first.rejected_rows, first.files) == (3, 0, ["a.jsonl"])
    assert new_landing_files(landing, settings.dlt_dir, name) == []
    # The quarantine exists (empty) from the first load on.
    assert lake(settings, "select count(*) from rejected_events") == [(0,)]
    files = sorted(settings.lake_dir.rglob("*.parquet"))

    # Each load drops the local state and restores it from the lake's state files.
    again = load(settings)
    assert (again.loaded_rows, again.skipped_files) == (0, 1)
    assert sorted(settings.lake_dir.rglob("*.parquet")) == files

    write_lines(landing / "sources" / "web" / "b.jsonl", [json.dumps(GOOD[0])])
    assert new_landing_files(landing, settings.dlt_dir, name) == ["sources/web/b.jsonl"]
    third = load(settings)
    assert third.files == ["sources/web/b.jsonl"]
    assert load(settings).loaded_rows == 0
    assert lake(settings, "select _source, count(*) from events group by 1 order by 1") == [
        ("files", 3),
        ("web", 1),
    ]
    # GOOD[0] is 23:30 at -05:00 on March 1st: its day is March 2nd in UTC.
    assert lake(settings, "select event_date, count(*) from events group by 1 order by 1") == [
        (dt.date(2026, 3, 1), 1),
        (dt.date(2026, 3, 2), 3),
    ]
