"""End to end through Dagster: landing files -> raw -> facts -> marts, on real parts.

One data directory is built once for the module (generate, then one single-run backfill
through the Dagster instance); the tests then check what a user would see.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from common.settings import Settings
from orchestration.definitions import build_definitions
from orchestration.transform.assets import DBT_OP_NAME, prune_run_folders
from sluice.runs import materialize_range, run_job
from tests.conftest import built_data_dir
from tests.orchestration.independent import daily_metrics

pytestmark = pytest.mark.slow

DAYS = 8
LAST = dt.date.today() - dt.timedelta(days=1)
FIRST = LAST - dt.timedelta(days=DAYS - 1)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    with built_data_dir(tmp_path_factory, "pipeline", LAST, DAYS, 250, seed=11) as settings:
        yield settings


def marts(settings: Settings) -> dict[str, list[tuple]]:
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        return {
            "dau": con.execute("select * from marts.dau order by all").fetchall(),
            "revenue_daily": con.execute(
                "select event_date, round(revenue_usd, 6), orders, paying_users "
                "from marts.revenue_daily order by all"
            ).fetchall(),
        }


def digest(settings: Settings) -> str:
    return hashlib.sha256(repr(marts(settings)).encode()).hexdigest()


def instance(settings: Settings) -> dg.DagsterInstance:
    return dg.DagsterInstance.from_config(str(settings.dagster_home))


def test_marts_equal_an_independent_computation_from_the_landing_files(built: Settings) -> None:
    expected_dau, expected_money = daily_metrics(built.landing_dir)
    got = marts(built)
    dau = {day.isoformat(): users for day, users in got["dau"]}
    assert dau == {d: n for d, n in expected_dau.items() if FIRST.isoformat() <= d <= str(LAST)}
    assert len(dau) == DAYS
    # Every day of the window has its revenue row, orders or not.
    assert [day for day, *_ in got["revenue_daily"]] == [
        FIRST + dt.timedelta(days=i) for i in range(DAYS)
    ]
    for day, revenue, orders, payers in got["revenue_daily"]:
        want_revenue, want_orders, want_payers = expected_money[day.isoformat()]
        assert (orders, payers) == (want_orders, want_payers), day
        assert revenue == pytest.approx(want_revenue, rel=1e-9, abs=1e-6), day
    assert sum(orders for _, _, orders, _ in got["revenue_daily"]) > 0


def test_the_range_was_one_run_with_one_dbt_invocation(built: Settings) -> None:
    with instance(built) as inst:
        runs = inst.get_runs(filters=dg.RunsFilter(job_name="elt"))
        assert len(runs) == 1
        records = inst.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(["marts", "dau"])), limit=100
        ).records
        partitions = {r.partition_key for r in records}
        invocations = {
            r.asset_materialization.metadata["invocation_id"].value
            for r in records
            if r.asset_materialization is not None
        }
    assert partitions == {(FIRST + dt.timedelta(d)).isoformat() for d in range(DAYS)}
    assert len(invocations) == 1
    # dagster-dbt gives each invocation its own folder in the data directory's dbt target
    # folder, named after the op and run.
    (run_results,) = built.dbt_target_dir.glob(
        f"{DBT_OP_NAME}-{runs[0].run_id[:7]}-*/run_results.json"
    )
    ran = [result["unique_id"] for result in json.loads(run_results.read_text())["results"]]
    assert "model.sluice.fct_events" in ran
    assert "test.sluice.assert_marts_reconcile_with_fct_events" in ran
    # Unit tests check the models' logic, which a scheduled run does not change.
    assert not [node for node in ran if node.startswith("unit_test.")]


def test_rerunning_a_partition_or_the_range_leaves_the_marts_identical(built: Settings) -> None:
    before = digest(built)
    middle = (FIRST + dt.timedelta(days=3)).isoformat()
    assert run_job(built, "build", {"dagster/partition": middle}).success
    assert digest(built) == before
    assert materialize_range(built, FIRST, LAST, job_name="build").success
    assert digest(built) == before


def _late_events_tick(settings: Settings) -> dg.SensorExecutionData:
    defs = build_definitions(settings)
    sensor = defs.resolve_sensor_def("late_events_sensor")
    with (
        instance(settings) as inst,
        dg.build_sensor_context(instance=inst, definitions=defs) as context,
    ):
        return sensor.evaluate_tick(context)


def test_a_late_event_rebuilds_its_day_and_nothing_else(
    built: Settings, capfd: pytest.CaptureFixture[str]
) -> None:
    # The elt run's own load touched every day it then built: nothing to rebuild.
    first_tick = _late_events_tick(built)
    assert not first_tick.run_requests
    assert "no day that is already built" in (first_tick.skip_message or "")

    late_day = LAST - dt.timedelta(days=2)
    # Older than SLUICE_LATE_LOOKBACK_DAYS (7): logged, left to a backfill.
    too_old_day = FIRST
    before = marts(built)
    late = {
        "type": "track",
        "messageId": "late-order-1",
        "userId": "user-arriving-late",
        "event": "Order Completed",
        "timestamp": f"{late_day.isoformat()}T23:59:00+01:00",  # 22:59 UTC on late_day
        "properties": {"revenue": 100, "currency": "USD"},
    }
    too_old = {
        **late,
        "messageId": "late-click-1",
        "event": "Clicked",
        "timestamp": f"{too_old_day.isoformat()}T12:00:00Z",
        "properties": {},
    }
    lines = [json.dumps(late), json.dumps(too_old)]
    (built.landing_dir / "late-delivery.jsonl").write_text("\n".join(lines) + "\n")
    load = run_job(built, "load")
    assert load.success

    capfd.readouterr()
    result = _late_events_tick(built)
    sensor_log = capfd.readouterr().err  # Dagster's console logger of the sensor
    assert len(result.run_requests) == 1
    request = result.run_requests[0]
    assert request.tags["dagster/asset_partition_range_start"] == late_day.isoformat()
    assert request.tags["dagster/asset_partition_range_end"] == late_day.isoformat()
    # One request per load and range: the daemon launches it once however often it ticks.
    assert request.run_key == f"late-{load.run_id}-{late_day}-{late_day}"
    assert f"late events for {too_old_day} are older than the 7-day lookback" in sensor_log
    assert run_job(built, "build", request.tags).success

    after = marts(built)
    changed_dau = [a for a, b in zip(after["dau"], before["dau"], strict=True) if a != b]
    # The too-old day stays as built until someone rebuilds it.
    assert changed_dau == [(late_day, dict(before["dau"])[late_day] + 1)]
    changed_revenue = [
        a for a, b in zip(after["revenue_daily"], before["revenue_daily"], strict=True) if a != b
    ]
    assert [row[0] for row in changed_revenue] == [late_day]
    old = next(row for row in before["revenue_daily"] if row[0] == late_day)
    assert changed_revenue[0][2] == old[2] + 1
    assert changed_revenue[0][1] == pytest.approx(old[1] + 100)


def test_a_schedule_run_and_a_backfill_launched_together_both_succeed(built: Settings) -> None:
    code = (
        "import sys, datetime as dt\n"
        "from common.settings import load_settings\n"
        "from sluice.runs import run_job, materialize_range\n"
        "s = load_settings()\n"
        "if sys.argv[1] == 'schedule':\n"
        "    o = run_job(s, 'elt', {'dagster/partition': sys.argv[2]})\n"
        "else:\n"
        "    o = materialize_range(s, dt.date.fromisoformat(sys.argv[2]),"
        " dt.date.fromisoformat(sys.argv[3]))\n"
        "print(o.message)\n"
        "sys.exit(0 if o.success else 1)\n"
    )
    schedule = subprocess.Popen(
        [sys.executable, "-c", code, "schedule", LAST.isoformat()],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    backfill = subprocess.Popen(
        [sys.executable, "-c", code, "backfill", FIRST.isoformat(), LAST.isoformat()],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    outputs = [p.communicate(timeout=300)[0] for p in (schedule, backfill)]
    assert schedule.returncode == 0, outputs[0][-3000:]
    assert backfill.returncode == 0, outputs[1][-3000:]


def test_load_metadata_reports_loaded_and_rejected_counts(built: Settings) -> None:
    with instance(built) as inst:
        records = inst.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(["raw", "rejected_events"])), limit=100
        ).records
    reported = [
        r.asset_materialization.metadata for r in records if r.asset_materialization is not None
    ]
    with duckdb.connect(str(built.warehouse_path), read_only=True) as con:
        loaded = con.execute("select count(*) from raw.events").fetchone()[0]
        rejected = con.execute("select count(*) from raw.rejected_events").fetchone()[0]
    assert rejected > 0
    assert sum(m["rejected_rows"].value for m in reported) == rejected
    assert sum(m["loaded_rows"].value for m in reported) == loaded


def test_mart_materializations_carry_window_figures_and_a_preview(built: Settings) -> None:
    with instance(built) as inst:
        records = inst.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(["marts", "dau"])), limit=1000
        ).records
        weekly = inst.get_latest_materialization_event(dg.AssetKey(["core", "user_active_weeks"]))
    # The range run's metadata, which every day of the range carries.
    metadata = next(
        r.asset_materialization.metadata
        for r in records
        if r.asset_materialization is not None
        and r.asset_materialization.metadata["window"].value == f"{FIRST} .. {LAST}"
    )
    # One row per day in dau: the figures say so without a count per day.
    assert metadata["rows_in_window"].value == DAYS
    assert metadata["partitions_with_rows"].value == DAYS
    assert metadata["rows_per_partition_min"].value == metadata["rows_per_partition_max"].value == 1
    assert metadata["first_partition_with_rows"].value == FIRST.isoformat()
    assert metadata["last_partition_with_rows"].value == LAST.isoformat()
    assert "dagster/partition_row_count" not in metadata
    assert not any(isinstance(v, dg.JsonMetadataValue) for v in metadata.values())
    assert "active_users" in metadata["preview"].value
    # A one-day run gives the day's row count under Dagster's own key.
    one_day = next(
        r.asset_materialization.metadata
        for r in records
        if r.asset_materialization is not None
        and r.asset_materialization.metadata["window"].value.split(" .. ")[0]
        == r.asset_materialization.metadata["window"].value.split(" .. ")[1]
    )
    assert one_day["dagster/partition_row_count"].value == 1
    # A weekly model counts the weeks (Mondays) its run replaced.
    assert weekly is not None and weekly.asset_materialization is not None
    weeks = weekly.asset_materialization.metadata
    for name in ("first_partition_with_rows", "last_partition_with_rows"):
        assert dt.date.fromisoformat(weeks[name].value).weekday() == 0


def test_only_the_newest_dbt_run_folders_are_kept(tmp_path: Path) -> None:
    for age in range(5):
        folder = tmp_path / f"{DBT_OP_NAME}-run{age}-abc"
        (folder / "compiled").mkdir(parents=True)
        (folder / "manifest.json").write_text("{}")
        os.utime(folder, (1_000_000 - age * 60, 1_000_000 - age * 60))
    (tmp_path / "manifest.json").write_text("{}")  # the data directory's own: never touched
    deleted = prune_run_folders(tmp_path, keep=2)
    assert sorted(p.name for p in deleted) == [f"{DBT_OP_NAME}-run{age}-abc" for age in (2, 3, 4)]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"{DBT_OP_NAME}-run0-abc",
        f"{DBT_OP_NAME}-run1-abc",
        "manifest.json",
    ]


def _check_evaluations(settings: Settings, run_id: str) -> dict[str, tuple[bool, str]]:
    with instance(settings) as inst:
        events = inst.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
    out = {}
    for event in events:
        evaluation = event.dagster_event.event_specific_data
        out[evaluation.asset_key.to_user_string()] = (evaluation.passed, evaluation.description)
    return out


def test_check_yesterday_passes_for_every_mart_once_yesterday_is_built(built: Settings) -> None:
    outcome = run_job(built, "check_yesterday")
    assert outcome.success
    evaluations = _check_evaluations(built, outcome.run_id)
    marts_keys = {
        key.to_user_string()
        for key in build_definitions(built).resolve_asset_graph().get_all_asset_keys()
        if key.path[0] == "marts"
    }
    assert set(evaluations) == marts_keys
    assert all(passed for passed, _ in evaluations.values()), evaluations
    assert evaluations["marts/dau"][1] == f"{LAST} is built"
