"""Republish the serving snapshot after any run that changed the marts.

The build and elt jobs publish the snapshot at their end. A run started from the UI on one
mart, a group or a range of partitions (a backfill) selects only the marts, and BI tools would
go on reading the earlier marts with no sign of it. This sensor sees that the newest mart
materialization is newer than the snapshot's and, once the run that made it has succeeded,
launches the ``publish`` job. After a failed run it publishes nothing and says why in its tick,
as the nightly build does: a snapshot keeps the marts of the last good run.
"""

from collections.abc import Sequence

import dagster as dg

from orchestration.lib import AssetJob

SENSOR_NAME = "snapshot_after_marts_sensor"


def _last_materialization(
    instance: dg.DagsterInstance, keys: Sequence[dg.AssetKey]
) -> tuple[int, str] | None:
    """(storage id, run id) of the newest materialization among ``keys``."""
    newest: tuple[int, str] | None = None
    for record in instance.get_asset_records(list(keys)):
        last = record.asset_entry.last_materialization_record
        if last is not None and (newest is None or last.storage_id > newest[0]):
            newest = (last.storage_id, last.run_id)
    return newest


def build_snapshot_sensor(
    mart_keys: Sequence[dg.AssetKey], snapshot_key: dg.AssetKey, publish_job: AssetJob
) -> dg.SensorDefinition:
    @dg.sensor(
        name=SENSOR_NAME,
        job=publish_job,
        minimum_interval_seconds=15,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Publishes the serving snapshot again after a run that built marts without it (a "
            "mart or a backfill started from the UI), once that run has succeeded."
        ),
    )
    def snapshot_after_marts_sensor(context: dg.SensorEvaluationContext):
        instance = context.instance
        marts = _last_materialization(instance, mart_keys)
        if marts is None:
            return dg.SkipReason("no mart has been built yet")
        snapshot = _last_materialization(instance, [snapshot_key])
        mart_id, run_id = marts
        if snapshot is not None and snapshot[0] > mart_id:
            return dg.SkipReason(
                f"the snapshot was published after the newest marts (run {run_id})"
            )
        run = instance.get_run_by_id(run_id)
        if run is None or not run.is_finished:
            return dg.SkipReason(f"run {run_id} is still building marts; publishing after it")
        if not run.is_success:
            return dg.SkipReason(
                f"run {run_id} changed marts and ended {run.status.value}: the snapshot keeps "
                "the marts of the last successful run until a run succeeds"
            )
        return dg.RunRequest(
            run_key=f"publish-after-{mart_id}",
            tags={"sluice/trigger": "marts_changed", "sluice/after_run": run_id},
        )

    return snapshot_after_marts_sensor
