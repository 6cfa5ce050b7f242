"""Sensors and schedules decide correctly without running anything heavy."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from orchestration.definitions import build_definitions
from orchestration.lib import late_days
from orchestration.prepare import prepare


def test_landing_sensor_requests_a_load_only_for_files_not_loaded(make_settings) -> None:
    from sluice.runs import run_job

    settings = make_settings(dt.date(2026, 1, 1))
    prepare(settings)
    defs = build_definitions(settings)
    sensor = defs.resolve_sensor_def("landing_files_sensor")
    line = '{"type": "track", "userId": "u1", "event": "Clicked", "messageId": "m%d", '
    line += '"timestamp": "2026-01-02T10:00:00Z"}\n'
    with dg.DagsterInstance.ephemeral() as instance:

        def tick() -> dg.SensorExecutionData:
            with dg.build_sensor_context(instance=instance) as context:
                return sensor.evaluate_tick(context)

        assert not tick().run_requests

        settings.landing_dir.mkdir(parents=True)
        (settings.landing_dir / "a.jsonl").write_text(line % 1)
        (settings.landing_dir / "open-segment.jsonl.tmp").write_text(line % 2)
        first = tick().run_requests
        assert len(first) == 1
        # Asked again before the load ran: the same run key, which the daemon launches once.
        assert [r.run_key for r in tick().run_requests] == [first[0].run_key]

        # Once a load (here the CLI's) has taken the file, nothing is left to load: no
        # run that would load nothing.
        assert run_job(settings, "load").success
        assert not tick().run_requests
        (settings.landing_dir / "open-segment.jsonl.tmp").write_text(line % 2 + line % 3)
        assert not tick().run_requests, "a segment still open is not loaded"

        (settings.landing_dir / "b.jsonl").write_text(line % 4)
        second = tick().run_requests
        assert len(second) == 1
        assert second[0].run_key != first[0].run_key


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


def test_check_yesterday_fails_for_every_mart_when_yesterday_is_not_built(make_settings) -> None:
    from sluice.runs import run_job

    settings = make_settings(dt.date.today() - dt.timedelta(days=3))
    outcome = run_job(settings, "check_yesterday")
    # A failed check does not fail its run: the evaluations say what is missing.
    assert outcome.success
    yesterday = dt.date.today() - dt.timedelta(days=1)
    with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        events = instance.all_logs(
            outcome.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
        )
    evaluations = [event.dagster_event.event_specific_data for event in events]
    assert len(evaluations) == 6
    for evaluation in evaluations:
        assert not evaluation.passed
        assert evaluation.description == f"{yesterday} is not built yet"
