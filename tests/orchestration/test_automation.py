"""Sensors and schedules decide correctly without running anything heavy."""

from __future__ import annotations

import datetime as dt
import os

import dagster as dg

from orchestration.definitions import build_definitions
from orchestration.lib import late_days
from sluice.prepare import prepare


def test_landing_sensor_requests_a_load_only_when_files_change(make_settings) -> None:
    settings = make_settings(dt.date(2026, 1, 1))
    prepare(settings)
    defs = build_definitions(settings)
    sensor = defs.resolve_sensor_def("landing_files_sensor")
    with dg.DagsterInstance.ephemeral() as instance:
        empty = sensor.evaluate_tick(dg.build_sensor_context(instance=instance))
        assert not empty.run_requests

        settings.landing_dir.mkdir(parents=True)
        (settings.landing_dir / "a.jsonl").write_text("{}\n")
        (settings.landing_dir / "open-segment.jsonl.tmp").write_text("{}\n")
        first = sensor.evaluate_tick(dg.build_sensor_context(instance=instance))
        assert len(first.run_requests) == 1
        assert first.cursor

        same = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=first.cursor))
        assert not same.run_requests

        (settings.landing_dir / "open-segment.jsonl.tmp").write_text("{}\n{}\n")
        still_open = sensor.evaluate_tick(
            dg.build_sensor_context(instance=instance, cursor=first.cursor)
        )
        assert not still_open.run_requests

        later = settings.landing_dir / "b.jsonl"
        later.write_text("{}\n")
        os.utime(later, ns=(1 << 62, 1 << 62))
        second = sensor.evaluate_tick(
            dg.build_sensor_context(instance=instance, cursor=first.cursor)
        )
        assert len(second.run_requests) == 1


def test_late_days_split_by_lookback_and_ignore_unbuilt_days() -> None:
    today = dt.date(2026, 3, 20)
    events = {"2026-03-01": 5, "2026-03-14": 2, "2026-03-19": 7, "2026-03-10": 1}
    built = {"2026-03-01", "2026-03-10", "2026-03-14"}
    recent, too_old = late_days(events, built, today, lookback_days=7)
    assert recent == ["2026-03-14"]
    assert too_old == ["2026-03-01", "2026-03-10"]


def test_daily_schedule_builds_yesterday(make_settings) -> None:
    settings = make_settings(dt.date(2026, 1, 1))
    prepare(settings)
    defs = build_definitions(settings)
    schedule = defs.resolve_schedule_def("daily_elt_schedule")
    tick = dt.datetime(2026, 3, 20, 0, 30, tzinfo=dt.UTC)
    with (
        dg.DagsterInstance.ephemeral() as instance,
        dg.build_schedule_context(instance=instance, scheduled_execution_time=tick) as context,
    ):
        result = schedule.evaluate_tick(context)
    assert [r.partition_key for r in result.run_requests or []] == ["2026-03-19"]
