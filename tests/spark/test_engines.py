"""The same generated days built on DuckDB and on the Spark cluster give the same marts.

Both data directories get the same landing files and one Dagster range run each (load, dbt
build, snapshot); the marts are compared in their serving snapshots, which is what BI tools,
reports and the query API read. Then, on Spark only: a rerun of a 7-day range changes
nothing, and a late event changes only its day.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from common.settings import Settings, load_settings
from ingestion.generator import generate
from sluice.runs import materialize_range, run_job

pytestmark = pytest.mark.slow

DAYS = 30
LAST = dt.date.today() - dt.timedelta(days=1)
FIRST = LAST - dt.timedelta(days=DAYS - 1)
USERS = 120

# Each mart's rows in a stable order, floats rounded: revenue to the cent, ratios to 1e-9.
MARTS = {
    "dau": "select event_date, active_users from marts.dau order by all",
    "revenue_daily": (
        "select event_date, round(revenue_usd, 2), orders, paying_users "
        "from marts.revenue_daily order by all"
    ),
    "event_counts_daily": "select * from marts.event_counts_daily order by all",
    "wau_mau": (
        "select event_date, dau, wau, mau, round(stickiness, 9) from marts.wau_mau order by all"
    ),
    "funnel_daily": "select * from marts.funnel_daily order by all",
    "retention_weekly": (
        "select cohort_week, weeks_since_first_seen, cohort_users, retained_users, "
        "round(retention_rate, 9) from marts.retention_weekly order by all"
    ),
}


def _env(settings: Settings) -> dict[str, str]:
    return {
        "SLUICE_DATA_DIR": str(settings.data_dir),
        "SLUICE_START_DATE": FIRST.isoformat(),
        "SLUICE_WAREHOUSE_ENGINE": settings.warehouse_engine,
        "SLUICE_SPARK_MASTER_PORT": str(settings.spark_master_port),
        "SLUICE_SPARK_UI_PORT": str(settings.spark_ui_port),
        "SLUICE_SPARK_THRIFT_PORT": str(settings.spark_thrift_port),
        "SLUICE_SPARK_WORKERS": str(settings.spark_workers),
    }


def snapshot_marts(settings: Settings) -> dict[str, list[tuple[Any, ...]]]:
    with duckdb.connect(str(settings.serving_path), read_only=True) as con:
        return {name: con.execute(sql).fetchall() for name, sql in MARTS.items()}


def snapshot_columns(settings: Settings) -> dict[str, list[tuple[str, str]]]:
    with duckdb.connect(str(settings.serving_path), read_only=True) as con:
        rows = con.execute(
            "select table_name, column_name, data_type from information_schema.columns "
            "where table_schema = 'marts' order by table_name, ordinal_position"
        ).fetchall()
    columns: dict[str, list[tuple[str, str]]] = {}
    for table, column, kind in rows:
        columns.setdefault(table, []).append((column, kind))
    return columns


class Engines:
    def __init__(self, duck: Settings, spark: Settings, patch: pytest.MonkeyPatch) -> None:
        self.duck = duck
        self.spark = spark
        self._patch = patch

    def use(self, settings: Settings) -> Settings:
        """Export ``settings`` to the environment, as a shell with them set would."""
        for key, value in {**_env(settings), **settings.subprocess_env()}.items():
            self._patch.setenv(key, value)
        return settings


@pytest.fixture(scope="module")
def engines(spark_cluster: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engines]:
    duck = load_settings(
        {
            "SLUICE_DATA_DIR": str(tmp_path_factory.mktemp("duckdb-engine") / "data"),
            "SLUICE_START_DATE": FIRST.isoformat(),
        }
    )
    spark = load_settings(_env(spark_cluster))
    generate(duck.landing_dir, FIRST, DAYS, USERS, seed=15)
    shutil.copytree(duck.landing_dir, spark.landing_dir, dirs_exist_ok=True)
    with pytest.MonkeyPatch.context() as patch:
        both = Engines(duck, spark, patch)
        for settings in (duck, spark):
            outcome = materialize_range(both.use(settings), FIRST, LAST)
            assert outcome.success, outcome.message
        yield both


def test_both_engines_give_the_same_marts(engines: Engines) -> None:
    duck, spark = snapshot_marts(engines.duck), snapshot_marts(engines.spark)
    for name in MARTS:
        assert spark[name] == duck[name], name
    assert len(duck["dau"]) == DAYS
    assert sum(orders for _, _, orders, _ in duck["revenue_daily"]) > 0
    # BI tools see the same tables: the same columns, in the same order, of the same types.
    assert snapshot_columns(engines.spark) == snapshot_columns(engines.duck)


def test_the_lake_holds_one_folder_per_event_day(engines: Engines) -> None:
    days = sorted(
        path.name.split("=", 1)[1]
        for path in (engines.spark.lake_dir / "raw" / "events").glob("event_date=*")
    )
    assert days[0] <= FIRST.isoformat()
    assert FIRST.isoformat() in days
    assert LAST.isoformat() in days
    assert not (engines.spark.warehouse_path).exists(), "the Spark engine wrote a DuckDB file"


def test_a_rerun_of_seven_days_changes_nothing(engines: Engines) -> None:
    before = snapshot_marts(engines.spark)
    first = LAST - dt.timedelta(days=6)
    outcome = materialize_range(engines.use(engines.spark), first, LAST, job_name="build")
    assert outcome.success, outcome.message
    assert outcome.days_built == tuple((first + dt.timedelta(days=i)).isoformat() for i in range(7))
    assert snapshot_marts(engines.spark) == before


def test_a_late_event_changes_only_its_day(engines: Engines) -> None:
    settings = engines.use(engines.spark)
    before = snapshot_marts(settings)
    late_day = LAST - dt.timedelta(days=3)
    late = {
        "type": "track",
        "messageId": "late-order-on-spark",
        "userId": "user-arriving-late",
        "event": "Order Completed",
        "timestamp": f"{late_day.isoformat()}T23:30:00+01:00",  # 22:30 UTC on late_day
        "properties": {"revenue": 42.5, "currency": "USD"},
    }
    landing: Path = settings.landing_dir / "late-delivery.jsonl"
    landing.write_text(json.dumps(late) + "\n")
    assert run_job(settings, "load").success
    tags = {"dagster/partition": late_day.isoformat()}
    assert run_job(settings, "build", tags).success

    after = snapshot_marts(settings)
    changed = [row for row in after["dau"] if row not in before["dau"]]
    assert changed == [(late_day, dict(before["dau"])[late_day] + 1)]
    revenue_before = {row[0]: row for row in before["revenue_daily"]}
    changed_revenue = [row for row in after["revenue_daily"] if row not in before["revenue_daily"]]
    assert [row[0] for row in changed_revenue] == [late_day]
    day, revenue, orders, payers = changed_revenue[0]
    assert orders == revenue_before[day][2] + 1
    assert payers == revenue_before[day][3] + 1  # a user who had not paid that day
    assert revenue == pytest.approx(revenue_before[day][1] + 42.5)
    # Every other day of every mart is as it was.
    for name in ("event_counts_daily", "funnel_daily"):
        unchanged_before = [row for row in before[name] if row[0] != late_day]
        unchanged_after = [row for row in after[name] if row[0] != late_day]
        assert unchanged_after == unchanged_before, name
