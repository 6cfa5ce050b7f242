"""When the transform stage runs: nightly for yesterday, and for days that late events touch."""

import datetime as dt
import json
from typing import Any

import dagster as dg

from common.settings import Settings
from orchestration.lib import AssetJob, late_days

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def range_tags(first: str, last: str) -> dict[str, str]:
    """Run tags that make one run cover the partitions first..last (a single-run backfill)."""
    return {RANGE_START_TAG: first, RANGE_END_TAG: last}


def build_daily_schedule(elt_job: AssetJob) -> Any:  # a schedule, unresolved until Definitions
    return dg.build_schedule_from_partitioned_job(
        elt_job,
        name="daily_elt_schedule",
        hour_of_day=0,
        minute_of_hour=30,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Loads new files and builds yesterday's partition at 00:30 UTC.",
    )


def _days_built_by_run(run: dg.DagsterRun | None) -> set[str]:
    if run is None:
        return set()
    tags = run.tags
    if RANGE_START_TAG in tags:
        first = dt.date.fromisoformat(tags[RANGE_START_TAG])
        last = dt.date.fromisoformat(tags[RANGE_END_TAG])
        return {(first + dt.timedelta(days=i)).isoformat() for i in range((last - first).days + 1)}
    if "dagster/partition" in tags:
        return {tags["dagster/partition"]}
    return set()


def build_late_events_sensor(
    settings: Settings,
    raw_key: dg.AssetKey,
    fact_key: dg.AssetKey,
    build_job: AssetJob,
) -> dg.SensorDefinition:
    @dg.asset_sensor(
        name="late_events_sensor",
        asset_key=raw_key,
        job=build_job,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "After each load, rebuilds in one run the already-built days that received late "
            f"events, up to {settings.late_lookback_days} days back."
        ),
    )
    def late_events_sensor(context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry):
        materialization = asset_event.asset_materialization
        if materialization is None:
            return dg.SkipReason("no materialization")
        value = materialization.metadata.get("events_by_date")
        events_by_date = json.loads(json.dumps(getattr(value, "value", None) or {}))
        built = context.instance.get_materialized_partitions(fact_key)
        already = _days_built_by_run(context.instance.get_run_by_id(asset_event.run_id))
        recent, too_old = late_days(
            {d: n for d, n in events_by_date.items() if d not in already},
            built,
            dt.date.today(),
            settings.late_lookback_days,
        )
        if too_old:
            context.log.warning(
                f"late events for {', '.join(too_old)} are older than the "
                f"{settings.late_lookback_days}-day lookback; a backfill will pick them up"
            )
        if not recent:
            return dg.SkipReason("the load touched no day that is already built")
        first, last = recent[0], recent[-1]
        return dg.RunRequest(
            run_key=f"late-{asset_event.run_id}-{first}-{last}",
            tags={**range_tags(first, last), "sluice/trigger": "late_events"},
        )

    return late_events_sensor
