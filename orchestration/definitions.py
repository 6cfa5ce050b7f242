"""The one Dagster entry point: binds assets, resources, jobs and global policies once.

Settings come from ``common.settings`` (the environment). Every asset that opens the
warehouse joins the pool ``duckdb_warehouse``, whose limit of 1 is set in the instance's
``dagster.yaml`` (on either engine: ``WAREHOUSE_POOL`` says why); jobs run in process because a
subprocess per step costs seconds. The same assets and jobs run on DuckDB and on Spark
(``SLUICE_WAREHOUSE_ENGINE``); the retention and compaction schedules exist on DuckDB only.
"""

from __future__ import annotations

import dagster as dg
from dagster_dlt import DagsterDltResource

from common.settings import Settings, load_settings
from orchestration.alerts import build_alerts_sensor
from orchestration.ingest.assets import RAW_EVENTS_KEY, build_ingest_assets
from orchestration.ingest.sensors import build_landing_sensor
from orchestration.lib import daily_partitions
from orchestration.maintain.jobs import (
    build_compact_job,
    build_maintain_schedules,
    build_retention_job,
)
from orchestration.prepare import prepare
from orchestration.serve.assets import SNAPSHOT_KEY, build_serve_assets
from orchestration.serve.reports import build_reports_job, build_reports_schedule
from orchestration.serve.sensors import build_snapshot_sensor
from orchestration.transform.assets import (
    FACT_KEY,
    build_transform_assets,
    dbt_resource,
    mart_keys,
)
from orchestration.transform.automation import build_daily_schedule, build_late_events_sensor
from orchestration.transform.checks import build_yesterday_check
from orchestration.transform.reconcile import build_reconcile_check

ELT_JOB = "elt"
LOAD_JOB = "load"
BUILD_JOB = "build"
CHECK_JOB = "check_yesterday"
PUBLISH_JOB = "publish"


def build_definitions(settings: Settings) -> dg.Definitions:
    partitions = daily_partitions(settings)
    transform = build_transform_assets(settings)
    ingest = build_ingest_assets(settings, FACT_KEY)
    marts = mart_keys(transform)
    serve = build_serve_assets(settings, marts)
    yesterday_check = build_yesterday_check(marts, partitions)
    not_the_yesterday_check = dg.AssetSelection.checks(yesterday_check)

    load_job = dg.define_asset_job(
        LOAD_JOB,
        selection=dg.AssetSelection.assets(ingest),
        description="Load every landing file not loaded before into raw.",
    )
    build_job = dg.define_asset_job(
        BUILD_JOB,
        selection=dg.AssetSelection.assets(transform, serve) - not_the_yesterday_check,
        description=(
            "Build facts and marts for a range of days with one dbt invocation, then publish "
            "the serving snapshot."
        ),
    )
    elt_job = dg.define_asset_job(
        ELT_JOB,
        selection=dg.AssetSelection.assets(ingest, transform, serve) - not_the_yesterday_check,
        description=(
            "Load new landing files, build facts and marts for a range of days, then publish "
            "the serving snapshot."
        ),
    )
    publish_job = dg.define_asset_job(
        PUBLISH_JOB,
        selection=dg.AssetSelection.assets(serve),
        description="Publish the serving snapshot from the warehouse's marts as they are.",
    )
    reports_job = build_reports_job(settings)
    retention_job = build_retention_job(settings)
    compact_job = build_compact_job(settings)
    check_job = dg.define_asset_job(
        CHECK_JOB,
        selection=not_the_yesterday_check,
        description="Check that yesterday's partition of every mart exists.",
    )
    return dg.Definitions(
        assets=[ingest, transform, serve],
        asset_checks=[yesterday_check, build_reconcile_check(settings, partitions)],
        jobs=[
            load_job,
            build_job,
            elt_job,
            publish_job,
            check_job,
            reports_job,
            retention_job,
            compact_job,
        ],
        schedules=[
            build_daily_schedule(elt_job),
            dg.ScheduleDefinition(
                name="yesterday_check_schedule",
                job=check_job,
                cron_schedule="0 6 * * *",
                execution_timezone="UTC",
                default_status=dg.DefaultScheduleStatus.RUNNING,
            ),
            build_reports_schedule(reports_job),
            *build_maintain_schedules(settings, retention_job, compact_job),
        ],
        sensors=[
            build_landing_sensor(settings, load_job),
            build_late_events_sensor(settings, RAW_EVENTS_KEY, FACT_KEY, build_job),
            build_snapshot_sensor(marts, SNAPSHOT_KEY, publish_job),
            build_alerts_sensor(settings),
        ],
        resources={"dlt": DagsterDltResource(), "dbt": dbt_resource(settings)},
        executor=dg.in_process_executor,
    )


@dg.definitions
def defs() -> dg.Definitions:
    settings = load_settings()
    # The dbt assets are read from the data directory's manifest: parse it if it is missing.
    prepare(settings)
    return build_definitions(settings)
