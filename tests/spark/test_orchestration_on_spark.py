"""What Dagster does around the Spark engine, on the session's real cluster: the snapshot is
published from a Spark table's folder in its contract's order and types, retention and
compaction refuse with what to do by hand (and have no schedule), and a run fails at once,
in one line, when the cluster does not answer."""

from __future__ import annotations

import dataclasses
import datetime as dt

import duckdb
import pytest

from common.settings import Settings
from common.spark import private_cluster_environment
from orchestration.definitions import build_definitions
from orchestration.lib import read_warehouse
from orchestration.maintain.jobs import COMPACT_JOB, RETENTION_JOB
from orchestration.prepare import prepare
from orchestration.serve.assets import spark_table
from serving.snapshot import publish_snapshot_from_parquet
from sluice.runs import SPARK_DOWN, RunFailed, check_engine, run_job

SCHEMA = "serve_probe"
CONTRACT = [("event_date", "date"), ("event_name", "string"), ("events", "bigint")]


def test_a_spark_table_is_published_in_its_contract_order_and_types(
    spark_cluster: Settings,
) -> None:
    first, second = dt.date(2026, 3, 1), dt.date(2026, 3, 2)
    with read_warehouse(spark_cluster) as warehouse:
        warehouse.rows(f"create database if not exists {SCHEMA}")
        warehouse.rows(f"drop table if exists {SCHEMA}.daily")
        warehouse.rows(
            f"create table {SCHEMA}.daily (event_name string, events bigint, event_date date) "
            "using parquet partitioned by (event_date)"
        )
        warehouse.rows(
            f"insert into {SCHEMA}.daily values ('a', 1, date '{first}'), "
            f"('b', 2, date '{first}'), ('a', 3, date '{second}')"
        )
        table = spark_table(warehouse, SCHEMA, "daily", CONTRACT)
        assert table is not None
        assert table.partition_columns == ("event_date",)
        assert table.location.is_relative_to(spark_cluster.spark_warehouse_dir)

        target = spark_cluster.data_dir / "probe.duckdb"
        publish_snapshot_from_parquet([table], target, "run-probe")
        with duckdb.connect(str(target), read_only=True) as con:
            columns = con.execute(
                "select column_name, data_type from information_schema.columns "
                f"where table_schema = '{SCHEMA}' order by ordinal_position"
            ).fetchall()
            rows = con.execute(f"select * from {SCHEMA}.daily order by all").fetchall()
        assert columns == [("event_date", "DATE"), ("event_name", "VARCHAR"), ("events", "BIGINT")]
        assert rows == [(first, "a", 1), (first, "b", 2), (second, "a", 3)]

        # A dropped partition's folder goes with it: the next publish no longer has the day.
        warehouse.rows(f"alter table {SCHEMA}.daily drop partition (event_date = '{first}')")
        version = publish_snapshot_from_parquet([table], target, "run-probe-2")
        assert version.row_counts == {f"{SCHEMA}.daily": 1}

        # A table that no longer matches its model says so, rather than publishing it.
        with pytest.raises(ValueError, match="contract declares"):
            spark_table(warehouse, SCHEMA, "daily", [*CONTRACT, ("users", "bigint")])
        warehouse.rows(f"drop table {SCHEMA}.daily")
        warehouse.rows(f"drop database {SCHEMA}")


def test_retention_and_compaction_refuse_on_spark_and_have_no_schedule(
    spark_cluster: Settings,
) -> None:
    prepare(spark_cluster)
    defs = build_definitions(spark_cluster)
    schedules = {schedule.name for schedule in defs.schedules or []}
    assert "retention_schedule" not in schedules
    assert "compaction_schedule" not in schedules
    messages = {}
    for job in (RETENTION_JOB, COMPACT_JOB):
        outcome = run_job(spark_cluster, job)
        assert not outcome.success
        messages[job] = outcome.message
        assert "not built yet (SLUICE_WAREHOUSE_ENGINE=spark)" in outcome.message, outcome.message
    assert "DROP IF EXISTS PARTITION" in messages[RETENTION_JOB]


def test_a_run_fails_at_once_when_the_cluster_does_not_answer(spark_cluster: Settings) -> None:
    check_engine(spark_cluster)  # the session's cluster answers
    # A port that was free a moment ago: no Thrift server answers there.
    port = private_cluster_environment(1)["SLUICE_SPARK_THRIFT_PORT"]
    elsewhere = dataclasses.replace(spark_cluster, spark_thrift_port=int(port))
    with pytest.raises(RunFailed) as failed:
        run_job(elsewhere, "build")
    assert failed.value.message == SPARK_DOWN
