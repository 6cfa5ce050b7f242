"""Sluice's own alerts from real Dagster runs and checks in a real instance, and freshness
states that Dagster's own freshness daemon records for a real code server, delivered to a chat
webhook and an SMTP server on 127.0.0.1 through the sensor's evaluation."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.events import DagsterEvent, StepMaterializationData
from dagster._core.events.log import EventLogEntry
from dagster._core.instance.utils import RUNLESS_JOB_NAME, RUNLESS_RUN_ID
from dagster._core.test_utils import create_test_daemon_workspace_context
from dagster._core.workspace.load_target import ModuleTarget
from dagster._daemon.freshness import FreshnessDaemon

from common.alerting import EventAlerts
from common.settings import REPO_DIR, Settings
from orchestration.alerts import SENSOR_NAME, build_alerts_sensor, evaluate
from tests.receivers import Inbox, Webhook

START = dt.date(2026, 3, 1)


def _definitions(flags: Path) -> dg.Definitions:
    """A job whose asset fails while ``flags/fail`` exists, and a check of it whose result and
    severity are read from ``flags/check`` ("pass", "error" or "warn")."""

    @dg.asset
    def orders() -> None:
        if (flags / "fail").exists():
            raise RuntimeError("the orders source answered HTTP 503")

    @dg.asset_check(asset=orders)
    def orders_reconcile() -> dg.AssetCheckResult:
        outcome = (flags / "check").read_text().strip()
        return dg.AssetCheckResult(
            passed=outcome == "pass",
            severity=dg.AssetCheckSeverity.WARN
            if outcome == "warn"
            else dg.AssetCheckSeverity.ERROR,
            description="3 orders differ from the source" if outcome != "pass" else "equal",
        )

    nightly = dg.define_asset_job("nightly", selection=dg.AssetSelection.assets(orders))
    return dg.Definitions(assets=[orders], asset_checks=[orders_reconcile], jobs=[nightly])


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    # Run retries on, as a team instance has them: a failed run tagged dagster/max_retries
    # is marked dagster/will_retry=true when it fails.
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(
        temp_dir=str(tmp_path / "dagster"), overrides={"run_retries": {"enabled": True}}
    ) as instance:
        yield instance


def _settings(make_settings, webhook: Webhook, smtp: tuple[int, Inbox]) -> Settings:  # type: ignore[no-untyped-def]
    return make_settings(
        START,
        SLUICE_REPORT_WEBHOOK_URL=webhook.url,
        SLUICE_SMTP_HOST="127.0.0.1",
        SLUICE_SMTP_PORT=str(smtp[0]),
        SLUICE_REPORT_EMAIL_TO="ops@example.com",
    )


def test_a_run_that_fails_for_the_last_time_alerts_once_and_a_success_resolves_it(
    make_settings,
    webhook: Webhook,
    smtp: tuple[int, Inbox],
    instance: dg.DagsterInstance,
    tmp_path: Path,
) -> None:  # type: ignore[no-untyped-def]
    settings = _settings(make_settings, webhook, smtp)
    inbox = smtp[1]
    flags = tmp_path / "flags"
    flags.mkdir()
    (flags / "check").write_text("pass")
    defs = _definitions(flags)
    job = defs.resolve_job_def("nightly")
    sensor = build_alerts_sensor(settings)

    def run(*, retries: int = 0) -> dg.ExecuteInProcessResult:
        tags = {"dagster/max_retries": str(retries)} if retries else {}
        return job.execute_in_process(instance=instance, raise_on_error=False, tags=tags)

    cursor: str | None = None

    def tick() -> str:
        nonlocal cursor
        with dg.build_sensor_context(instance=instance, cursor=cursor) as context:
            result = sensor(context)
            cursor = context.cursor
        assert isinstance(result, dg.SkipReason)
        return result.skip_message or ""

    (flags / "fail").touch()
    retried = run(retries=1)
    assert not retried.success
    assert instance.get_run_by_id(retried.run_id).tags["dagster/will_retry"] == "true"  # type: ignore[union-attr]
    said = tick()
    assert webhook.posts == [] and inbox.messages == []
    assert "(it will be retried)" in said

    final = run()
    said = tick()
    [firing] = webhook.posts
    assert firing["text"] == (
        f"Sluice run {final.run_id[:8]} of job nightly failed: step orders: RuntimeError: the "
        "orders source answered HTTP 503."
    )
    assert firing["blocks"][0]["text"]["text"] == "FIRING: run_failed/nightly"
    assert inbox.subjects() == ["Sluice alert run_failed/nightly: firing"]
    assert "raised run_failed/nightly (sent: run_failed/nightly)" in said

    run()  # fails again: the alert is firing, nothing is sent again
    assert "sent: none" in tick()
    assert len(webhook.posts) == 1 and len(inbox.messages) == 1

    (flags / "fail").unlink()
    run()
    assert "resolved run_failed/nightly" in tick()
    assert len(webhook.posts) == 2
    resolved = webhook.texts()[1]
    assert resolved.startswith("Sluice job nightly resolved: run ")
    assert "raised 2 times" in resolved
    assert inbox.subjects()[1] == "Sluice alert run_failed/nightly: resolved"

    # A failure within the cool-down after it resolved is recorded, not sent; nor is the
    # resolution of an alert whose firing was held back.
    (flags / "fail").touch()
    run()
    tick()
    (flags / "fail").unlink()
    run()
    tick()
    assert len(webhook.posts) == 2 and len(inbox.messages) == 2
    assert tick() == "read 0 events"  # the cursor moved past every event


def test_a_sensor_turned_on_reads_the_last_hour_not_the_whole_history(
    make_settings, webhook: Webhook, instance: dg.DagsterInstance, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(START, SLUICE_REPORT_WEBHOOK_URL=webhook.url)
    flags = tmp_path / "flags"
    flags.mkdir()
    (flags / "fail").touch()
    job = _definitions(flags).resolve_job_def("nightly")
    assert not job.execute_in_process(instance=instance, raise_on_error=False).success
    # First evaluated two hours later: the failure is history, now and at the next tick.
    later = time.time() + 2 * 3600
    cursor, first = evaluate(instance, settings, None, log=lambda _line: None, now=later)
    _, second = evaluate(instance, settings, cursor, log=lambda _line: None, now=later + 30)
    assert first.raised == [] and second.summary() == "read 0 events"
    assert webhook.posts == []


def test_an_error_check_that_fails_alerts_and_its_pass_resolves_it(
    make_settings,
    webhook: Webhook,
    smtp: tuple[int, Inbox],
    instance: dg.DagsterInstance,
    tmp_path: Path,
) -> None:  # type: ignore[no-untyped-def]
    settings = _settings(make_settings, webhook, smtp)
    flags = tmp_path / "flags"
    flags.mkdir()
    job = _definitions(flags).resolve_job_def("nightly")
    cursor, _ = evaluate(instance, settings, None, log=lambda _line: None)

    def check(outcome: str) -> str:
        nonlocal cursor
        (flags / "check").write_text(outcome)
        # A failed check does not fail its run: the run succeeds.
        assert job.execute_in_process(instance=instance).success
        cursor, done = evaluate(instance, settings, cursor, log=lambda _line: None)
        return done.summary()

    assert "left alone check_failed/orders/orders_reconcile (severity WARN)" in check("warn")
    assert webhook.posts == []
    check("error")
    [firing] = webhook.texts()
    assert firing == (
        "Sluice check orders_reconcile of orders failed (severity ERROR): 3 orders differ from "
        "the source."
    )
    check("error")
    assert len(webhook.posts) == 1
    assert "resolved check_failed/orders/orders_reconcile" in check("pass")
    assert webhook.texts()[1].startswith(
        "Sluice check orders_reconcile of orders resolved: it passed. It fired at "
    )
    assert [str(m["Subject"]) for m in smtp[1].messages] == [
        "Sluice alert check_failed/orders/orders_reconcile: firing",
        "Sluice alert check_failed/orders/orders_reconcile: resolved",
    ]


def test_freshness_turned_fail_by_the_freshness_daemon_alerts_and_pass_resolves(
    make_settings, webhook: Webhook, smtp: tuple[int, Inbox], instance: dg.DagsterInstance
) -> None:  # type: ignore[no-untyped-def]
    settings = _settings(make_settings, webhook, smtp)
    target = ModuleTarget(
        module_name="tests.orchestration.freshness_defs",
        attribute="defs",
        working_directory=str(REPO_DIR),
        location_name="freshness",
    )
    cursor, _ = evaluate(instance, settings, None, log=lambda _line: None)

    def materialized(at: float) -> None:
        # A materialization as a run records it, at the time given.
        event = DagsterEvent(
            event_type_value=dg.DagsterEventType.ASSET_MATERIALIZATION.value,
            job_name=RUNLESS_JOB_NAME,
            event_specific_data=StepMaterializationData(
                dg.AssetMaterialization(asset_key="daily_orders")
            ),
        )
        instance.store_event(
            EventLogEntry(
                error_info=None,
                level="debug",
                user_message="",
                run_id=RUNLESS_RUN_ID,
                timestamp=at,
                dagster_event=event,
            )
        )

    with create_test_daemon_workspace_context(target, instance) as workspace:
        daemon = FreshnessDaemon()

        def daemon_then_sensor() -> str:
            nonlocal cursor
            for _ in daemon.run_iteration(workspace):  # one evaluation of every asset's policy
                pass
            cursor, done = evaluate(instance, settings, cursor, log=lambda _line: None)
            return done.summary()

        daemon_then_sensor()  # never materialized: UNKNOWN, nothing to say
        assert webhook.posts == []
        materialized(time.time() - 2 * 3600)  # two hours ago, with a window of one
        assert "raised stale/daily_orders" in daemon_then_sensor()
        [firing] = webhook.texts()
        assert firing.startswith(
            "Sluice asset daily_orders is stale: its freshness policy turned FAIL (from "
            "UNKNOWN) at "
        )
        materialized(time.time())
        assert "resolved stale/daily_orders" in daemon_then_sensor()
    assert webhook.texts()[1].startswith("Sluice asset daily_orders resolved: it is fresh again")
    assert [str(m["Subject"]) for m in smtp[1].messages] == [
        "Sluice alert stale/daily_orders: firing",
        "Sluice alert stale/daily_orders: resolved",
    ]


def test_the_cool_down_holds_a_repeat_back_until_it_is_over_and_refused_posts_are_retried(
    make_settings, webhook: Webhook
) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(START, SLUICE_REPORT_WEBHOOK_URL=webhook.url)
    log: list[str] = []
    alerts = EventAlerts(settings, dt.timedelta(minutes=30), log=log.append)
    t0 = dt.datetime(2026, 3, 1, 10, tzinfo=dt.UTC).timestamp()
    assert alerts.raise_alert("run_failed/elt", "Sluice run 1 of job elt failed: x.", now=t0).sent
    assert alerts.resolve("run_failed/elt", "Sluice job elt resolved.", now=t0 + 60)
    held = alerts.raise_alert("run_failed/elt", "Sluice run 2 of job elt failed: x.", now=t0 + 600)
    assert not held.sent and held.reason.startswith("cooling down since")
    assert len(webhook.posts) == 2
    # Raised again once the cool-down is over (30 minutes after it resolved): sent.
    webhook.status = 500
    assert alerts.raise_alert(
        "run_failed/elt", "Sluice run 3 of job elt failed: x.", now=t0 + 1900
    ).sent
    assert any("HTTP 500" in line and "retrying" in line for line in log)
    webhook.status = 200
    alerts.deliver(t0 + 1960)
    assert webhook.texts()[2:] == [
        "Sluice run 3 of job elt failed: x.",
        "Sluice run 3 of job elt failed: x.",
    ]
    alerts.deliver(t0 + 2000)  # delivered: nothing left to send
    assert len(webhook.posts) == 4
    assert alerts.firing() == {"run_failed/elt": "Sluice run 3 of job elt failed: x."}
    # sluice alerts lists it, after the data alert rules.
    shown = subprocess.run(
        [str(Path(sys.executable).with_name("sluice")), "alerts"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert f"Platform alerts firing ({settings.alerts_path}): 1" in shown
    assert "  run_failed/elt: Sluice run 3 of job elt failed: x." in shown


def test_the_sensor_is_registered_and_running_by_default(make_settings) -> None:  # type: ignore[no-untyped-def]
    from orchestration.definitions import build_definitions

    settings = make_settings(START)
    from orchestration.prepare import prepare

    prepare(settings)
    sensor = build_definitions(settings).resolve_sensor_def(SENSOR_NAME)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert sensor.minimum_interval_seconds == 30
