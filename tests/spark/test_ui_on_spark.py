"""What a data engineer does in the Dagster UI works on the Spark engine too: `sluice dev` on
the Spark cluster's data directory, runs and backfills launched through Dagster's GraphQL
API as the UI launches them (the DuckDB engine's version: tests/orchestration/
test_ui_selections.py, whose client this module uses).

The cluster's data directory holds the days that tests/spark/test_engines.py built (this
module generates and builds the last days itself when it runs alone); the UI materializes one
mart's partition, backfills one mart over a range, then the marts group over the same range,
whose run republishes the serving snapshot.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from common.settings import Settings, load_settings
from ingestion.generator import generate
from serving.snapshot import connect_snapshot
from sluice.runs import materialize_range
from tests.orchestration.test_ui_selections import (
    MARTS,
    DagsterUI,
    _materialized,
    _tags,
    dagster_dev,
)
from tests.spark.test_engines import DAYS, FIRST, LAST, USERS, _env

pytestmark = pytest.mark.slow

RANGE = [LAST - dt.timedelta(days=2 - i) for i in range(3)]


@pytest.fixture(scope="module")
def ui(spark_cluster: Settings) -> Iterator[DagsterUI]:
    env = _env(spark_cluster)
    settings = load_settings(env)
    with pytest.MonkeyPatch.context() as patch:
        for key, value in {**env, **settings.subprocess_env()}.items():
            patch.setenv(key, value)
        if not settings.serving_path.exists():  # this module alone: build the days first
            generate(settings.landing_dir, FIRST, DAYS, USERS, seed=15)
            outcome = materialize_range(settings, RANGE[0], RANGE[-1])
            assert outcome.success, outcome.message
        with dagster_dev(settings) as ui:
            yield ui


def test_materialize_one_partition_of_one_mart(ui: DagsterUI) -> None:
    day = RANGE[1].isoformat()
    run = ui.wait_run(ui.launch_run([["marts", "dau"]], {"dagster/partition": day}))
    assert run["status"] == "SUCCESS"
    assert _materialized(run) == {("marts/dau", day)}


def test_backfill_one_mart_over_a_range_is_one_run(ui: DagsterUI) -> None:
    (run,) = ui.wait_backfill(ui.launch_backfill([["marts", "revenue_daily"]], RANGE))
    assert run["status"] == "SUCCESS"
    tags = _tags(run)
    span = (tags["dagster/asset_partition_range_start"], tags["dagster/asset_partition_range_end"])
    assert span == (RANGE[0].isoformat(), RANGE[-1].isoformat())
    assert _materialized(run) == {("marts/revenue_daily", day.isoformat()) for day in RANGE}


def test_backfill_the_marts_group_republishes_the_snapshot(ui: DagsterUI) -> None:
    marts = [["marts", name] for name in MARTS]
    runs = ui.wait_backfill(ui.launch_backfill(marts, RANGE))
    assert len(runs) == 1, "a range is one run with one dbt invocation"
    assert runs[0]["status"] == "SUCCESS"
    assert {key for key, _ in _materialized(runs[0])} == {f"marts/{name}" for name in MARTS}
    publish = ui.wait_publish_after(runs[0]["runId"])
    assert ui.snapshot_version() == publish
    with connect_snapshot(ui.settings.serving_path) as con:
        days = con.execute(
            "select count(*) from marts.dau where event_date between ? and ?",
            [RANGE[0], RANGE[-1]],
        ).fetchone()
    assert days == (len(RANGE),)
