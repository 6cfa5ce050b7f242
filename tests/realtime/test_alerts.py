"""Data alerts as a user meets them: rules in YAML files over a real-time store that the real
stream worker filled, delivered to a chat webhook and an SMTP server on 127.0.0.1; and the
alert thread of a real ``sluice stream`` process."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common.settings import ALERTS_DIR, Settings
from realtime.alerts import METRICS, AlertEngine, Context, Metric, Rule, load_rules
from realtime.worker import StreamWorker
from tests.receivers import Inbox, Webhook

SLUICE = str(Path(sys.executable).with_name("sluice"))
BASE = dt.datetime(2026, 3, 1, 10, tzinfo=dt.UTC)


def _fill(settings: Settings, lines: list[dict[str, Any] | str], stem: str) -> None:
    """Write ``lines`` as a closed landing segment and fold it with the real worker."""
    folder = settings.api_sources_dir / "web"
    folder.mkdir(parents=True, exist_ok=True)
    text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    (folder / f"{stem}.jsonl").write_text(text)
    with StreamWorker(settings) as worker:
        assert worker.run_once() >= 1


def _order(n: int, at: dt.datetime) -> dict[str, Any]:
    stamp = at.isoformat()
    return {
        "type": "track",
        "event": "Order Completed",
        "userId": f"user-{n % 7}",
        "messageId": f"order-{n}",
        "timestamp": stamp,
        "receivedAt": stamp,
        "properties": {"revenue": 10},
    }


def _rules(folder: Path, text: str, name: str = "rules.yml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)
    return folder


def _at(minute: int) -> dt.datetime:
    """Half a minute into minute ``minute`` after BASE."""
    return BASE + dt.timedelta(minutes=minute, seconds=30)


def test_an_alert_fires_once_resolves_once_and_keeps_its_cool_down(
    make_settings, webhook: Webhook, smtp: tuple[int, Inbox], tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    port, inbox = smtp
    settings: Settings = make_settings(
        BASE.date(),
        SLUICE_REPORT_WEBHOOK_URL=webhook.url,
        SLUICE_SMTP_HOST="127.0.0.1",
        SLUICE_SMTP_PORT=str(port),
        SLUICE_REPORT_EMAIL_TO="ops@example.com",
    )
    # Three orders a minute in minutes 0-4, 15-19 and 50-54 after BASE; none in between.
    minutes = [*range(0, 5), *range(15, 20), *range(50, 55)]
    orders = [
        _order(m * 3 + k, BASE + dt.timedelta(minutes=m, seconds=10 + k))
        for m in minutes
        for k in range(3)
    ]
    _fill(settings, orders, "20260301T100000000000-1-000001")
    rules = _rules(
        tmp_path / "alerts",
        """
rules:
  - name: orders_dropped
    description: Fewer orders than usual.
    metric: orders
    window_minutes: 5
    below: 2
    for_minutes: 2
    cooldown_minutes: 30
""",
    )
    log: list[str] = []
    engine = AlertEngine(settings, rules, log=log.append)

    def evaluate(*minutes: int) -> None:
        for minute in minutes:
            engine.evaluate(_at(minute))

    evaluate(4, 9, 10)  # 15 orders; then none since 9:30, for less than 2 minutes
    assert webhook.posts == [] and inbox.messages == []

    evaluate(11, 12, 13, 14)  # held 2 minutes at 11:30: fires, and is delivered once
    [firing] = webhook.posts
    assert firing["text"] == (
        "Sluice alert orders_dropped is firing: orders over the last 5 minutes is 0, below 2, "
        "since 2026-03-01 10:09:30 UTC."
    )
    assert firing["blocks"][0]["text"]["text"] == "FIRING: orders_dropped"
    assert inbox.subjects() == ["Sluice alert orders_dropped: firing"]
    assert inbox.messages[0]["To"] == "ops@example.com"
    assert "Fewer orders than usual." in inbox.messages[0].get_content()

    evaluate(15, 16)  # 3 orders in 11..15: resolved, one message
    assert len(webhook.posts) == 2 and len(inbox.messages) == 2
    assert webhook.texts()[1] == (
        "Sluice alert orders_dropped resolved: orders over the last 5 minutes is 3 (alert when "
        "below 2); it fired at 2026-03-01 10:11:30 UTC and lasted 4 minutes."
    )
    assert inbox.subjects()[1] == "Sluice alert orders_dropped: resolved"

    evaluate(24, 26, 30, 40, 44)  # none again since 24:30, but within the cool-down (to 45:30)
    assert len(webhook.posts) == 2 and len(inbox.messages) == 2

    evaluate(45)  # the cool-down is over and the condition still holds: fires again
    assert len(webhook.posts) == 3 and "is firing" in webhook.texts()[2]
    assert "since 2026-03-01 10:24:30 UTC" in webhook.texts()[2]

    # A restart (a new engine on the same state) notifies nothing again.
    engine = AlertEngine(settings, rules, log=log.append)
    evaluate(47, 48)
    assert len(webhook.posts) == 3 and len(inbox.messages) == 3

    # The webhook fails when the alert resolves: the mail goes, the post is retried once at
    # the next evaluation, and nothing else is sent.
    webhook.status = 500
    evaluate(50)
    assert len(inbox.messages) == 4 and "resolved" in inbox.subjects()[3]
    assert any("HTTP 500" in line and "retrying" in line for line in log)
    assert not any("secret-token" in line for line in log)
    webhook.status = 200
    evaluate(51, 52, 53)
    assert [text.split(":")[0] for text in webhook.texts()] == [
        "Sluice alert orders_dropped is firing",
        "Sluice alert orders_dropped resolved",
        "Sluice alert orders_dropped is firing",
        "Sluice alert orders_dropped resolved",  # the refused post
        "Sluice alert orders_dropped resolved",  # its retry
    ]
    assert len(inbox.messages) == 4


def test_rejected_share_and_a_silent_worker_read_the_workers_own_counts(
    make_settings, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    settings: Settings = make_settings(BASE.date())
    now = dt.datetime.now(dt.UTC)
    valid = [_order(n, now - dt.timedelta(seconds=n)) for n in range(7)]
    _fill(
        settings, [*valid, "{not json", '{"type": "nonsense"}', "[]"], "20260301T100000000000-1-1"
    )
    rules = _rules(
        tmp_path / "alerts",
        """
rules:
  - name: rejected
    metric: rejected_share
    window_minutes: 5
    above: 20%
  - name: stalled
    metric: worker_silent_seconds
    above: 30
""",
    )
    log: list[str] = []
    engine = AlertEngine(settings, rules, log=log.append)
    engine.evaluate(now)
    # No channel is set up: the alert is logged, and says how to deliver it.
    assert log == [
        "Sluice alert rejected is firing: the share of lines rejected (invalid) over the last "
        f"5 minutes is 30.0%, above 20.0%, since {now:%Y-%m-%d %H:%M:%S} UTC. (not delivered: "
        "set SLUICE_REPORT_WEBHOOK_URL, or SLUICE_SMTP_HOST and SLUICE_REPORT_EMAIL_TO)"
    ]
    # The worker committed (its heartbeat) just now; a minute later with no beat, it is silent.
    engine.evaluate(now + dt.timedelta(seconds=60))
    assert len(log) == 2 and log[1].startswith("Sluice alert stalled is firing: seconds since")
    # An hour later no line was committed in the window: no share, so the state stays.
    engine.evaluate(now + dt.timedelta(hours=1))
    assert len(log) == 2


def test_broken_rule_files_name_the_file_rule_and_field_and_valid_rules_keep_working(
    make_settings, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    settings: Settings = make_settings(BASE.date())
    _fill(settings, [_order(1, BASE)], "20260301T100000000000-1-1")
    folder = tmp_path / "alerts"
    _rules(folder, "rules: [\n  - name: x\n", "broken.yml")
    _rules(folder, "rules: 3\n", "not_a_list.yml")
    _rules(
        folder,
        """
rules:
  - name: few_orders
    metric: orders
    window_minutes: 5
    below: 2
  - name: no_signups
    metric: events
    event: Signed Up
    window_minutes: 5
    below: 1
  - name: no_orders
    metric: events
    event: Order Completed
    window_minutes: 5
    below: 1
  - name: zero_window
    metric: orders
    window_minutes: 0
    below: 1
  - name: unknown_metric
    metric: signups
    window_minutes: 5
    below: 1
  - name: bad_share
    metric: rejected_share
    window_minutes: 5
    above: lots
  - name: both
    metric: events
    window_minutes: 5
    above: 1
    below: 5
  - name: typo
    metric: events
    window_minute: 5
    below: 1
  - name: few_orders
    metric: events
    window_minutes: 5
    below: 1
""",
        "mixed.yml",
    )
    rules, errors = load_rules(folder)
    assert [rule.name for rule in rules] == ["few_orders", "no_signups", "no_orders"]
    mixed = folder / "mixed.yml"
    assert errors[0].startswith(f"{folder / 'broken.yml'}: cannot be read as YAML")
    assert errors[1:] == [
        f"{mixed}: rule 'zero_window': field 'window_minutes' must be a whole number of minutes "
        "from 1 to 1440 (the metric is read over the last N minutes)",
        f"{mixed}: rule 'unknown_metric': field 'metric' must be one of events, orders, "
        "revenue_usd, active_users, rejected_share, late_share, worker_silent_seconds, not "
        "'signups'",
        f"{mixed}: rule 'bad_share': field 'above' must be a number (a share: 0.05 or \"5%\")",
        f"{mixed}: rule 'both': field 'above' or 'below' (one of them) must give the threshold",
        f"{mixed}: rule 'typo': field 'window_minute' is not a field of a rule; the fields are "
        "name, description, metric, event, window_minutes, above, below, for_minutes, "
        "cooldown_minutes",
        f"{mixed}: rule 'few_orders': field 'name' is also the name of a rule in {mixed}; names "
        "must be unique",
        f"{folder / 'not_a_list.yml'}: must hold 'rules:', a list of alert rules",
    ]

    log: list[str] = []
    engine = AlertEngine(settings, folder, log=log.append)
    engine.evaluate(_at(2))
    engine.evaluate(_at(3))
    # Each error is logged once, and the valid rule fired.
    assert sorted(line for line in log if line.startswith("alert rules: ")) == sorted(
        f"alert rules: {error} (left out until fixed)" for error in errors
    )
    # Each valid rule was evaluated: the one order at 10:00 counts as an event named
    # 'Order Completed', and there is no 'Signed Up'.
    undelivered = (
        " (not delivered: set SLUICE_REPORT_WEBHOOK_URL, or SLUICE_SMTP_HOST and "
        "SLUICE_REPORT_EMAIL_TO)"
    )
    assert [line for line in log if "is firing" in line] == [
        "Sluice alert few_orders is firing: orders over the last 5 minutes is 1, below 2, since "
        "2026-03-01 10:02:30 UTC." + undelivered,
        "Sluice alert no_signups is firing: 'Signed Up' events over the last 5 minutes is 0, "
        "below 1, since 2026-03-01 10:02:30 UTC." + undelivered,
    ]


def test_another_metric_source_plugs_in_and_a_failing_one_is_logged_once(
    make_settings, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    settings: Settings = make_settings(BASE.date())
    _fill(settings, [_order(1, BASE)], "20260301T100000000000-1-1")

    def segments(context: Context, rule: Rule) -> float:
        return len(list(context.settings.api_sources_dir.rglob("*.jsonl")))

    def broken(context: Context, rule: Rule) -> float:
        raise RuntimeError("the source is down")

    metrics = {
        **METRICS,
        "landing_segments": Metric("landing_segments", "landing segments", segments, False),
        "broken": Metric("broken", "a broken figure", broken, False),
    }
    folder = _rules(
        tmp_path / "alerts",
        """
rules:
  - name: segments_piling_up
    metric: landing_segments
    above: 0
  - name: never
    metric: broken
    above: 0
  - name: few_orders
    metric: orders
    window_minutes: 5
    below: 2
""",
    )
    log: list[str] = []
    engine = AlertEngine(settings, folder, metrics, log=log.append)
    for minute in (1, 2, 3):
        engine.evaluate(_at(minute))
    assert [line.split(":")[0] for line in log] == [
        "Sluice alert segments_piling_up is firing",
        "alert never",
        "Sluice alert few_orders is firing",
    ]
    assert "landing segments is 1, above 0" in log[0]
    assert log[1] == "alert never: could not read broken: the source is down"
    # Rules on a metric that this engine does not know are errors, naming it.
    assert "field 'metric' must be one of" in load_rules(folder)[1][0]


def test_the_shipped_rules_are_valid() -> None:
    rules, errors = load_rules(ALERTS_DIR)
    assert errors == []
    assert {rule.name for rule in rules} >= {"no_events", "rejected_share_high"}


def _wait_for(condition: Any, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_sluice_stream_alerts_with_the_shipped_rules(
    make_settings, webhook: Webhook, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    now = dt.datetime.now(dt.UTC)
    settings: Settings = make_settings(now.date())
    env = {**os.environ, "SLUICE_ALERT_INTERVAL_SECONDS": "1"}
    env["SLUICE_REPORT_WEBHOOK_URL"] = webhook.url
    out = tmp_path / "stream.log"
    with out.open("wb") as handle:
        process = subprocess.Popen([SLUICE, "stream"], env=env, stdout=handle, stderr=handle)
    try:
        # No event in the last 10 minutes: no_events fires, once over several evaluations.
        _wait_for(lambda: webhook.posts, "the no_events alert", timeout=30)
        time.sleep(3.5)
        assert webhook.texts() == [webhook.texts()[0]] and webhook.texts()[0].startswith(
            "Sluice alert no_events is firing: events over the last 10 minutes is 0"
        )
        folder = settings.api_sources_dir / "web"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "20260301T100000000000-1-1.jsonl").write_text(json.dumps(_order(1, now)) + "\n")
        _wait_for(lambda: len(webhook.posts) == 2, "the resolved message", timeout=30)
        assert webhook.texts()[1].startswith("Sluice alert no_events resolved: events over")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
    log = out.read_text()
    assert "alerts: 4 rules of" in log and "delivered by webhook" in log
    assert "Traceback" not in log
    assert len(webhook.posts) == 2

    shown = subprocess.run([SLUICE, "alerts"], env=env, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    [no_events] = [line for line in shown.stdout.splitlines() if "no_events" in line]
    assert "events over the last 10 minutes below 1" in no_events
    assert "cooling down" in no_events and f"{dt.datetime.now(dt.UTC):%Y-%m-%d}" in no_events
