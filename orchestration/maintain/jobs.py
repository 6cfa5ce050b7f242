"""The warehouse's upkeep as Dagster op jobs: ``retention`` (daily) and ``compact`` (weekly).

They are jobs of one op, not assets: they change the tables of assets that exist already, and
a maintenance step in the asset graph would be swept into every "Materialize all". Each op
joins the warehouse pool, so no other run has the warehouse open while it deletes or swaps
the file. What they did is in the op's output metadata (the run's page), and the retention
job also records an ``AssetObservation`` on every asset that lost rows, so each asset's
event timeline says which days were dropped, when, and under which setting.

Both work on the DuckDB warehouse only. On the Spark engine (``SLUICE_WAREHOUSE_ENGINE=spark``)
their ops refuse with what to do by hand (``refusal``), ``sluice retention`` and
``sluice compact`` say the same before starting a run, and their schedules are not defined.
"""

import datetime as dt

import dagster as dg

from common.settings import WAREHOUSE_POOL, Settings
from orchestration.lib import SPARK
from orchestration.maintain import compaction, retention
from orchestration.maintain.horizons import LAYERS

RETENTION_JOB = "retention"
RETENTION_OP = "drop_old_days"
COMPACT_JOB = "compact"
COMPACT_OP = "compact_warehouse"


def refusal(settings: Settings, job: str) -> str | None:
    """Why ``job`` (retention or compact) does not run on this engine, and what to do by hand;
    None on DuckDB."""
    if settings.warehouse_engine != SPARK:
        return None
    engine = f"SLUICE_WAREHOUSE_ENGINE={settings.warehouse_engine}"
    if job == RETENTION_JOB:
        return (
            f"retention of the lake and of Spark's tables is not built yet ({engine}); nothing "
            "was dropped. By hand, through the Thrift server (beeline, or any Hive client): "
            "`SHOW PARTITIONS core.fct_events` lists the days, and `ALTER TABLE core.fct_events "
            "DROP IF EXISTS PARTITION (event_date = '2026-01-01')` drops one (Spark deletes its "
            "folder); do the same for the daily marts (marts.dau, marts.event_counts_daily, "
            "marts.funnel_daily, marts.revenue_daily, marts.wau_mau), older days first"
        )
    return (
        f"compaction of the lake and of Spark's tables is not built yet ({engine}); nothing was "
        "rewritten. A partition dropped with `ALTER TABLE ... DROP PARTITION` gives its folder's "
        "space back at once, and building a day again (`sluice materialize --start D --end D`) "
        "rewrites its files"
    )


class RetentionConfig(dg.Config):
    # False: count what would be dropped and change nothing (`sluice retention` without --apply).
    apply: bool = True
    # The day taken as today (YYYY-MM-DD); empty: today (UTC).
    as_of: str = ""


def _today(config: RetentionConfig) -> dt.date:
    if not config.as_of:
        return dt.datetime.now(dt.UTC).date()
    try:
        return dt.date.fromisoformat(config.as_of)
    except ValueError:
        raise dg.Failure(f"as_of={config.as_of!r} is not a date; use YYYY-MM-DD") from None


def build_retention_job(settings: Settings) -> dg.JobDefinition:
    @dg.op(
        name=RETENTION_OP,
        pool=WAREHOUSE_POOL,
        description=(
            "Drops the days past each layer's horizon from raw, core and the marts "
            "(SLUICE_RETENTION_*_DAYS) and the landing files loaded longer ago than "
            "SLUICE_RETENTION_LANDING_DAYS; with apply=false only counts them."
        ),
    )
    def drop_old_days(context: dg.OpExecutionContext, config: RetentionConfig) -> dg.Output[None]:
        refused = refusal(settings, RETENTION_JOB)
        if refused is not None:
            raise dg.Failure(refused, allow_retries=False)
        try:
            result = retention.run_retention(settings, _today(config), config.apply)
        except retention.RetentionError as error:
            raise dg.Failure(str(error), allow_retries=False) from None
        report = result.as_json()
        lines = retention.describe(report)
        for line in lines:
            context.log.info(line)
        if result.applied:
            for table in result.tables:
                if not table.rows:
                    continue
                horizon = result.horizons[table.layer]
                assert horizon is not None
                context.log_event(
                    dg.AssetObservation(
                        asset_key=dg.AssetKey(table.table.split(".")),
                        description=(
                            f"retention dropped {table.rows:,} rows of the days before "
                            f"{horizon.dropped_before} ({horizon.setting})"
                        ),
                        metadata={
                            "retention/dropped_before": horizon.dropped_before.isoformat(),
                            "retention/rows_dropped": table.rows,
                            "retention/days_dropped": len(table.days),
                            "retention/first_day_dropped": table.days[0],
                            "retention/last_day_dropped": table.days[-1],
                            "retention/setting": horizon.setting,
                        },
                    )
                )
        return dg.Output(
            None,
            metadata={
                "applied": result.applied,
                "summary": dg.MetadataValue.md("\n".join(f"    {line}" for line in lines)),
                "retention": dg.MetadataValue.json(report),
                **{
                    f"{layer}_days_dropped": len(result.days(layer))
                    for layer in LAYERS
                    if result.horizons.get(layer) is not None
                },
                "rows_dropped": sum(t.rows for t in result.tables),
                "landing_files_dropped": len(result.landing),
                "warehouse_bytes": result.warehouse_bytes,
                "free_bytes": result.free_bytes,
            },
        )

    @dg.job(
        name=RETENTION_JOB,
        description=(
            "Drop the days past each layer's retention horizon (raw, core, marts) and the "
            "landing files loaded long ago; run config apply=false only counts them."
        ),
    )
    def retention_job() -> None:
        drop_old_days()

    return retention_job


def build_compact_job(settings: Settings) -> dg.JobDefinition:
    @dg.op(
        name=COMPACT_OP,
        pool=WAREHOUSE_POOL,
        description=(
            "Rewrites the warehouse into a new DuckDB file (tables in day order) and swaps it "
            "in, giving back the space deletes left free."
        ),
    )
    def compact_warehouse(context: dg.OpExecutionContext) -> dg.Output[None]:
        refused = refusal(settings, COMPACT_JOB)
        if refused is not None:
            raise dg.Failure(refused, allow_retries=False)
        report = compaction.compact(settings).as_json()
        lines = compaction.describe(report)
        for line in lines:
            context.log.info(line)
        return dg.Output(
            None,
            metadata={
                "summary": dg.MetadataValue.md("\n".join(f"    {line}" for line in lines)),
                "compaction": dg.MetadataValue.json(report),
                "bytes_before": report["bytes_before"],
                "bytes_after": report["bytes_after"],
                "bytes_reclaimed": report["bytes_reclaimed"],
                "path": dg.MetadataValue.path(str(settings.warehouse_path)),
            },
        )

    @dg.job(
        name=COMPACT_JOB,
        description="Rewrite the warehouse into a new file without its free space, and swap it in.",
    )
    def compact_job() -> None:
        compact_warehouse()

    return compact_job


def build_maintain_schedules(
    settings: Settings, retention_job: dg.JobDefinition, compact_job: dg.JobDefinition
) -> list[dg.ScheduleDefinition]:
    """The nightly retention and the weekly compaction; none on Spark, where both refuse."""
    if refusal(settings, RETENTION_JOB) is not None:
        return []
    return [
        dg.ScheduleDefinition(
            name="retention_schedule",
            job=retention_job,
            # After the nightly build (00:30) and the reports (01:00).
            cron_schedule="0 2 * * *",
            execution_timezone="UTC",
            default_status=dg.DefaultScheduleStatus.RUNNING,
            description="Drops the days past each layer's retention horizon at 02:00 UTC.",
        ),
        dg.ScheduleDefinition(
            name="compaction_schedule",
            job=compact_job,
            cron_schedule="0 3 * * 0",
            execution_timezone="UTC",
            default_status=dg.DefaultScheduleStatus.RUNNING,
            description=(
                "Rewrites the warehouse without the space retention freed, Sundays at 03:00 UTC."
            ),
        ),
    ]
