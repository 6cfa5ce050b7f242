"""The batching event log records the same as Dagster's own SQLite event log, in fewer writes.

A small partitioned job (three assets, one with a check) runs over a range of days as one run
on two instances that differ only in their event log: Dagster's ``SqliteEventLogStorage``
and Sluice's ``BatchingSqliteEventLogStorage``, as ``orchestration/dagster.yaml`` names it.
"""

from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import dagster as dg
import pytest
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

from common.settings import DAGSTER_YAML_TEMPLATE
from orchestration.event_log import BatchingSqliteEventLogStorage

DAYS = dg.DailyPartitionsDefinition(start_date="2026-01-01", end_date="2026-01-11")
KEYS = [dg.AssetKey("first"), dg.AssetKey("second"), dg.AssetKey("third")]


def _assets(fail: bool) -> list[dg.AssetsDefinition]:
    @dg.multi_asset(
        specs=[dg.AssetSpec(key) for key in KEYS],
        check_specs=[dg.AssetCheckSpec("positive", asset="third")],
        partitions_def=DAYS,
        backfill_policy=dg.BackfillPolicy.single_run(),
    )
    def build(context: dg.AssetExecutionContext) -> Iterator[object]:
        if fail:
            raise RuntimeError("the build failed")
        days = len(context.partition_keys)
        for key in KEYS:
            yield dg.MaterializeResult(asset_key=key, metadata={"days": days})
        yield dg.AssetCheckResult(asset_key="third", check_name="positive", passed=True)

    return [build]


class CountingStorage(BatchingSqliteEventLogStorage):
    """Counts the batches it is handed, to show that the runs below go through batches."""

    batches: ClassVar[list[int]] = []

    def store_event_batch(self, events) -> None:  # type: ignore[no-untyped-def]
        type(self).batches.append(len(events))
        super().store_event_batch(events)


def _instance(home: Path, storage: type, monkeypatch: pytest.MonkeyPatch) -> dg.DagsterInstance:
    home.mkdir()
    template = DAGSTER_YAML_TEMPLATE.read_text()
    if storage is SqliteEventLogStorage:
        template = template.split("\nevent_log_storage:")[0]
        template += f"\nevent_log_storage:\n  module: {storage.__module__}\n"
        template += f"  class: {storage.__name__}\n  config:\n    base_dir: {home}/history/runs\n"
    elif storage is CountingStorage:
        template = template.replace(
            "module: orchestration.event_log", f"module: {storage.__module__}"
        ).replace("class: BatchingSqliteEventLogStorage", f"class: {storage.__name__}")
    (home / "dagster.yaml").write_text(template)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", "400")
    instance = dg.DagsterInstance.from_config(str(home))
    assert type(instance.event_log_storage) is storage
    return instance


def _run(instance: dg.DagsterInstance, fail: bool = False) -> dg.ExecuteInProcessResult:
    job = dg.Definitions(assets=_assets(fail)).resolve_implicit_global_asset_job_def()
    return job.execute_in_process(
        instance=instance,
        tags={
            "dagster/asset_partition_range_start": "2026-01-02",
            "dagster/asset_partition_range_end": "2026-01-08",
        },
        raise_on_error=False,
    )


def _recorded(instance: dg.DagsterInstance, run_id: str) -> dict[str, object]:
    """What the UI reads: each asset's partitions, materializations, planned and failed days."""
    out: dict[str, object] = {}
    for key in KEYS:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key), limit=100
        ).records
        out[f"{key.to_user_string()} materialized"] = sorted(
            instance.get_materialized_partitions(key)
        )
        out[f"{key.to_user_string()} records"] = sorted(
            (r.partition_key, r.asset_materialization.metadata["days"].value)  # type: ignore[union-attr]
            for r in records
        )
        out[f"{key.to_user_string()} status"] = instance.get_status_by_partition(
            key, DAYS.get_partition_keys(), DAYS
        )
    types = [str(event.dagster_event_type) for event in instance.all_logs(run_id)]
    out["events"] = sorted(types)
    check = instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(dg.AssetKey("third"), "positive"), limit=100
    )
    out["check executions"] = len(check)
    return out


def test_a_range_run_records_the_same_as_dagsters_storage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    CountingStorage.batches = []
    with _instance(tmp_path / "plain", SqliteEventLogStorage, monkeypatch) as plain:
        result = _run(plain)
        assert result.success
        want = _recorded(plain, result.run_id)
    with _instance(tmp_path / "batching", CountingStorage, monkeypatch) as batching:
        result = _run(batching)
        assert result.success
        got = _recorded(batching, result.run_id)
    assert got == want
    assert got["first materialized"] == [f"2026-01-0{day}" for day in range(2, 9)]
    # The planned events (3 assets x 7 days, and the check once), then one batch per asset.
    assert sorted(CountingStorage.batches) == [7, 7, 7, 22]


def test_a_failed_range_run_marks_its_days_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _instance(tmp_path / "batching", BatchingSqliteEventLogStorage, monkeypatch) as instance:
        result = _run(instance, fail=True)
        assert not result.success
        status = instance.get_status_by_partition(KEYS[0], DAYS.get_partition_keys(), DAYS)
    assert status is not None
    failed = sorted(day for day, state in status.items() if state and state.value == "FAILED")
    assert failed == [f"2026-01-0{day}" for day in range(2, 9)]
