"""Sluice alerts by itself, without Prometheus: a Dagster sensor that reads the instance's event
log and raises the platform's alerts through the one alert engine (``common.alerting``).

What it alerts on, and what resolves each alert (``alert name``):

- a run that failed for the last time (``run_failed/<job>``): a run tagged
  ``dagster/will_retry=true`` is left alone, since its retry comes next. A run of the same job
  that succeeds resolves it.
- an asset check of severity ERROR that failed (``check_failed/<asset>/<check>``, with
  ``[<partition>]`` for a partitioned check): a failed check does not fail its run, so a
  run-failure sensor never sees it. The same check passing (for the same partition) resolves
  it; a WARN failure neither raises nor resolves.
- an asset whose freshness policy's state turned FAIL (``stale/<asset>``), as Dagster's
  freshness daemon records it (a ``FRESHNESS_STATE_CHANGE`` event; the daemon runs in
  ``dagster-daemon`` and ``dagster dev`` as ``freshness: enabled`` in the instance's
  ``dagster.yaml`` asks). Its state turning PASS resolves it.

Query budgets overrun (``query_budget/<key>``) are raised by ``sluice serve`` itself
(``serving.budgets``), into the same state file and outbox.

Cheap by design: each tick asks the event log for the four event types after the cursor (one
indexed query each, at most ``BATCH`` events), and looks a run up only when it failed. The
cursor is the last storage id seen per event type; a sensor with no cursor yet (just turned
on) reads the last ``FIRST_LOOKBACK`` only, rather than alerting on old history. Delivery
(``SLUICE_REPORT_WEBHOOK_URL``; ``SLUICE_SMTP_HOST`` with ``SLUICE_REPORT_EMAIL_TO``), the
cool-down (``SLUICE_PLATFORM_ALERT_COOLDOWN_MINUTES``) and the state (``Settings.alerts_path``)
come from ``common.settings``.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import dagster as dg
from dagster._core.definitions.freshness import FreshnessState
from dagster._core.event_api import EventLogCursor, EventLogRecord

from common.alerting import EventAlerts
from common.settings import Settings

SENSOR_NAME = "sluice_alerts_sensor"
WILL_RETRY_TAG = "dagster/will_retry"
BATCH = 200
FIRST_LOOKBACK = dt.timedelta(hours=1)
EVENT_TYPES = (
    dg.DagsterEventType.RUN_FAILURE,
    dg.DagsterEventType.RUN_SUCCESS,
    dg.DagsterEventType.FRESHNESS_STATE_CHANGE,
)


@dataclass
class Tick:
    """What one evaluation did: the events read per type, alerts raised, sent and resolved."""

    read: dict[str, int] = field(default_factory=dict)
    raised: list[str] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def summary(self) -> str:
        read = sum(self.read.values())
        parts = [f"read {read} event{'s' if read != 1 else ''}"]
        if self.raised:
            parts.append(
                f"raised {', '.join(self.raised)} (sent: {', '.join(self.sent) or 'none'})"
            )
        if self.resolved:
            parts.append(f"resolved {', '.join(self.resolved)}")
        if self.skipped:
            parts.append(f"left alone {', '.join(self.skipped)}")
        return "; ".join(parts)


def _first_line(text: str | None) -> str:
    # Long enough for a library's whole sentence ("... The actual reason given is: ...").
    return (text or "").strip().splitlines()[0][:600].rstrip() if (text or "").strip() else ""


def _step_errors(instance: dg.DagsterInstance, run_id: str) -> str:
    """ "step orders: RuntimeError: ..." for the first steps that failed (the run's own
    failure event only says that steps failed)."""
    failures = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.STEP_FAILURE, limit=3
    ).records
    found = []
    for record in failures:
        event = record.event_log_entry.dagster_event
        error = event.step_failure_data.error if event is not None else None
        # Dagster wraps the step's exception, and libraries wrap theirs (dlt's
        # PipelineStepFailed): the innermost cause says what went wrong.
        while error is not None and error.cause is not None:
            error = error.cause
        if event is not None and error is not None:
            found.append(f"step {event.step_key}: {_first_line(error.message)}")
    return "; ".join(found)


def _run_failed(
    instance: dg.DagsterInstance, record: EventLogRecord, alerts: EventAlerts, tick: Tick
) -> None:
    entry = record.event_log_entry
    run = instance.get_run_by_id(entry.run_id)
    job = entry.job_name or (run.job_name if run else "unknown")
    if run is not None and run.tags.get(WILL_RETRY_TAG) == "true":
        tick.skipped.append(f"run {entry.run_id[:8]} of {job} (it will be retried)")
        return
    reason = _step_errors(instance, entry.run_id)
    if not reason:
        event = entry.dagster_event
        reason = _first_line(event.message if event else None) or _first_line(entry.user_message)
    name = f"run_failed/{job}"
    text = f"Sluice run {entry.run_id[:8]} of job {job} failed: {reason}"
    if not text.endswith((".", "!", "?")):
        text += "."
    fields = [("job", job), ("run", entry.run_id), ("failed at", _at(record.timestamp))]
    raised = alerts.raise_alert(name, text, fields, now=record.timestamp)
    tick.raised.append(name)
    if raised.sent:
        tick.sent.append(name)


def _run_succeeded(record: EventLogRecord, alerts: EventAlerts, tick: Tick) -> None:
    entry = record.event_log_entry
    job = entry.job_name or "unknown"
    name = f"run_failed/{job}"
    text = f"Sluice job {job} resolved: run {entry.run_id[:8]} succeeded."
    if alerts.resolve(name, text, [("job", job), ("run", entry.run_id)], now=record.timestamp):
        tick.resolved.append(name)


def _check_evaluated(record: EventLogRecord, alerts: EventAlerts, tick: Tick) -> None:
    event = record.event_log_entry.dagster_event
    if event is None:
        return
    check = event.asset_check_evaluation_data
    asset = check.asset_key.to_user_string()
    partition = f"[{check.partition}]" if check.partition else ""
    name = f"check_failed/{asset}/{check.check_name}{partition}"
    where = f"{asset}{' for ' + check.partition if check.partition else ''}"
    if check.passed:
        text = f"Sluice check {check.check_name} of {where} resolved: it passed."
        if alerts.resolve(name, text, [("asset", asset)], now=record.timestamp):
            tick.resolved.append(name)
        return
    if check.severity != dg.AssetCheckSeverity.ERROR:
        tick.skipped.append(f"{name} (severity {check.severity.value})")
        return
    said = f": {_first_line(check.description)}" if check.description else ""
    text = f"Sluice check {check.check_name} of {where} failed (severity ERROR){said}"
    if not text.endswith((".", "!", "?")):
        text += "."
    fields = [("asset", asset), ("check", check.check_name), ("run", record.run_id)]
    if check.partition:
        fields.append(("partition", check.partition))
    raised = alerts.raise_alert(name, text, fields, now=record.timestamp)
    tick.raised.append(name)
    if raised.sent:
        tick.sent.append(name)


def _freshness_changed(record: EventLogRecord, alerts: EventAlerts, tick: Tick) -> None:
    event = record.event_log_entry.dagster_event
    if event is None:
        return
    change = event.asset_freshness_state_change_data
    asset = change.key.to_user_string()
    name = f"stale/{asset}"
    if change.new_state == FreshnessState.PASS:
        text = f"Sluice asset {asset} resolved: it is fresh again (freshness PASS)."
        if alerts.resolve(name, text, [("asset", asset)], now=change.state_change_timestamp):
            tick.resolved.append(name)
        return
    if change.new_state != FreshnessState.FAIL:
        return
    text = (
        f"Sluice asset {asset} is stale: its freshness policy turned FAIL "
        f"(from {change.previous_state.value}) at {_at(change.state_change_timestamp)}."
    )
    raised = alerts.raise_alert(
        name, text, [("asset", asset), ("freshness", "FAIL")], now=change.state_change_timestamp
    )
    tick.raised.append(name)
    if raised.sent:
        tick.sent.append(name)


def _at(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _after(
    instance: dg.DagsterInstance,
    event_type: dg.DagsterEventType,
    after: int | None,
    since: float,
) -> list[EventLogRecord]:
    """The events of ``event_type`` after the storage id ``after`` (None: since ``since``),
    oldest first, at most ``BATCH``."""
    if event_type == dg.DagsterEventType.FRESHNESS_STATE_CHANGE:
        # An asset event: kept in the index of every event log storage, SQLite's included.
        return list(
            instance.event_log_storage.get_event_records(
                dg.EventRecordsFilter(
                    event_type=event_type,
                    after_cursor=after,
                    after_timestamp=since if after is None else None,
                ),
                limit=BATCH,
                ascending=True,
            )
        )
    if after is None:
        filter_ = dg.RunStatusChangeRecordsFilter(
            event_type,  # type: ignore[arg-type]  # one of the run types of EVENT_TYPES
            after_timestamp=since,
        )
        return list(instance.fetch_run_status_changes(filter_, BATCH, ascending=True).records)
    cursor = EventLogCursor.from_storage_id(after).to_string()
    return list(instance.fetch_run_status_changes(event_type, BATCH, cursor, True).records)


def _newest(instance: dg.DagsterInstance, event_type: dg.DagsterEventType) -> int:
    """The storage id of the newest event of ``event_type``; 0 when there is none."""
    if event_type == dg.DagsterEventType.FRESHNESS_STATE_CHANGE:
        records = instance.event_log_storage.get_event_records(
            dg.EventRecordsFilter(event_type=event_type), limit=1, ascending=False
        )
    else:
        records = instance.fetch_run_status_changes(event_type, 1, ascending=False).records
    return records[0].storage_id if records else 0


def evaluate(
    instance: dg.DagsterInstance,
    settings: Settings,
    cursor: str | None,
    log: Callable[[str], None] = print,
    now: float | None = None,
) -> tuple[str, Tick]:
    """Read the events after ``cursor`` and raise or resolve their alerts; the new cursor and
    what was done.

    Runs that ended (failed or succeeded) are read in the order they ended; the check
    evaluations of each run are read from that run's own events when it ends (one query per
    run; a check's result does not depend on the run's), then the run's own outcome."""
    now = time.time() if now is None else now
    since = now - FIRST_LOOKBACK.total_seconds()
    seen: dict[str, int] = json.loads(cursor) if cursor else {}
    alerts = EventAlerts(
        settings, dt.timedelta(minutes=settings.platform_alert_cooldown_minutes), log=log
    )
    tick = Tick()
    ended: list[tuple[dg.DagsterEventType, EventLogRecord]] = []
    for event_type in EVENT_TYPES:
        records = _after(instance, event_type, seen.get(event_type.value), since)
        tick.read[event_type.value] = len(records)
        if records:
            seen[event_type.value] = records[-1].storage_id
        elif event_type.value not in seen:
            # Nothing in the look-back: go on after the newest event of the type, however old.
            seen[event_type.value] = _newest(instance, event_type)
        if event_type == dg.DagsterEventType.FRESHNESS_STATE_CHANGE:
            for record in records:
                _freshness_changed(record, alerts, tick)
        else:
            ended.extend((event_type, record) for record in records)
    for event_type, record in sorted(ended, key=lambda pair: pair[1].storage_id):
        checks = instance.get_records_for_run(
            record.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
        ).records
        tick.read["ASSET_CHECK_EVALUATION"] = tick.read.get("ASSET_CHECK_EVALUATION", 0) + len(
            checks
        )
        for check in checks:
            _check_evaluated(check, alerts, tick)
        if event_type == dg.DagsterEventType.RUN_FAILURE:
            _run_failed(instance, record, alerts, tick)
        else:
            _run_succeeded(record, alerts, tick)
    alerts.deliver(now)
    return json.dumps(seen, sort_keys=True), tick


def build_alerts_sensor(settings: Settings) -> dg.SensorDefinition:
    @dg.sensor(
        name=SENSOR_NAME,
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Sends Sluice's own alerts by webhook and mail (SLUICE_REPORT_WEBHOOK_URL, "
            "SLUICE_SMTP_HOST): a run that failed for the last time, an ERROR asset check that "
            "failed, an asset whose freshness turned FAIL; and their resolution (a successful "
            "run of the job, the check passing, the asset fresh again). Launches no runs."
        ),
    )
    def sluice_alerts_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
        cursor, tick = evaluate(context.instance, settings, context.cursor, log=context.log.info)
        context.update_cursor(cursor)
        return dg.SkipReason(tick.summary())

    return sluice_alerts_sensor
