"""Saved reports as a user meets them: `sluice report run` on the serving snapshot, and the
morning schedule. Reads the data directory built once for tests/serving (conftest.py)."""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import os
import re
import socket
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from common.settings import REPORTS_DIR, Settings, SettingsError, load_settings
from orchestration.definitions import build_definitions
from serving.delivery import DeliveryError, post_webhook
from serving.reports import (
    ReportError,
    find_report,
    format_cell,
    load_report,
    query_report,
    write_report,
)
from serving.snapshot import connect_snapshot
from tests.receivers import Inbox, Webhook
from tests.serving.conftest import FIRST, LAST

pytestmark = pytest.mark.slow

SLUICE = str(Path(sys.executable).with_name("sluice"))


def sluice(
    settings: Settings, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SLUICE, "report", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **settings.subprocess_env(), "COLUMNS": "200", **(env or {})},
    )


def snapshot_days(settings: Settings) -> tuple[dt.date, dt.date]:
    with connect_snapshot(settings.serving_path) as con:
        row = con.execute("select min(event_date), max(event_date) from marts.dau").fetchone()
    assert row is not None
    return row[0], row[1]


def daily_rows(settings: Settings) -> list[tuple]:
    with connect_snapshot(settings.serving_path) as con:
        return con.execute(
            "select dau.event_date, dau.active_users, coalesce(revenue.orders, 0) "
            "from marts.dau as dau left join marts.revenue_daily as revenue using (event_date) "
            "where dau.event_date between ? and ? order by 1",
            [FIRST, LAST],
        ).fetchall()


def test_a_report_is_one_self_contained_html_file_with_a_chart(built: Settings) -> None:
    # A writer holds the warehouse the whole time: the report must not need it.
    with duckdb.connect(str(built.warehouse_path)):
        result = sluice(built, "run", "daily_summary", "--start", str(FIRST), "--end", str(LAST))
    assert result.returncode == 0, result.stderr
    page = built.reports_output_dir / "daily_summary" / f"{LAST}.html"
    assert str(page) in result.stdout.replace("\n", "")
    text = page.read_text()
    assert text.count("<svg") == 1 and "<polyline" in text
    assert "<script" not in text and "<link" not in text
    assert re.findall(r"https?://[^\"' ]+", text) == ["http://www.w3.org/2000/svg"]
    for day, active_users, orders in daily_rows(built):
        assert f'<td>{day}</td><td class="number">{active_users:,}</td>' in text
        assert f'<td class="number">{orders:,}</td>' in text


def test_a_csv_report_holds_the_query_rows(built: Settings) -> None:
    result = sluice(
        built, "run", "daily_summary", "--start", str(FIRST), "--end", str(LAST), "--format", "csv"
    )
    assert result.returncode == 0, result.stderr
    path = built.reports_output_dir / "daily_summary" / f"{LAST}.csv"
    with path.open() as f:
        rows = list(csv.DictReader(f))
    got = [(r["event_date"], int(r["active_users"]), int(r["orders"])) for r in rows]
    assert got == [(str(day), users, orders) for day, users, orders in daily_rows(built)]


def test_report_errors_are_one_line_that_says_what_to_do(built: Settings, tmp_path: Path) -> None:
    unknown = sluice(built, "run", "nope", "--start", str(FIRST), "--end", str(LAST))
    assert unknown.returncode != 0 and "Traceback" not in unknown.stderr
    assert "no report 'nope'" in unknown.stderr and "daily_summary" in unknown.stderr

    empty = Settings(data_dir=tmp_path / "empty", start_date=FIRST)
    missing = sluice(empty, "run", "daily_summary", "--start", str(FIRST), "--end", str(LAST))
    assert missing.returncode != 0 and "Traceback" not in missing.stderr
    assert "no serving snapshot" in missing.stderr and "sluice materialize" in missing.stderr


def test_a_range_without_rows_writes_nothing_and_says_which_days_the_snapshot_holds(
    built: Settings,
) -> None:
    first, last = snapshot_days(built)
    start, end = first - dt.timedelta(days=30), first - dt.timedelta(days=24)
    result = sluice(built, "run", "daily_summary", "--start", str(start), "--end", str(end))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    message = " ".join(result.stderr.split())
    assert f"No rows for daily_summary over {start} .. {end}" in message
    assert f"the serving snapshot holds the days {first} .. {last}; no file written" in message
    assert f"sluice materialize --start {start} --end {end}" in message
    assert not (built.reports_output_dir / "daily_summary" / f"{end}.html").exists()


def test_a_report_written_without_rows_is_flagged_in_the_file_and_the_post(
    built: Settings, tmp_path: Path, webhook: Webhook
) -> None:
    # What the morning schedule does, over days the snapshot does not hold.
    first, last = snapshot_days(built)
    start, end = last + dt.timedelta(days=10), last + dt.timedelta(days=16)
    result = query_report(built.serving_path, find_report(REPORTS_DIR, "signup_funnel"), start, end)
    page = write_report(result, tmp_path, "html").read_text()
    assert f"<h1>signup_funnel: {start} .. {end} (no rows)</h1>" in page
    assert (
        f'<p class="note">No rows for signup_funnel over {start} .. {end}: the serving snapshot '
        f"holds the days {first} .. {last}.</p>" in page
    )
    assert "<svg" not in page
    post_webhook(result, tmp_path / "signup_funnel.html", webhook.url)
    assert (
        f"{start} .. {end}: no rows (the serving snapshot holds the days {first} .. {last})"
        in (webhook.posts[0]["text"])
    )


def test_report_list_shows_every_report_with_its_chart_and_schedule(tmp_path: Path) -> None:
    listed = sluice(Settings(data_dir=tmp_path, start_date=FIRST), "list", env={"COLUMNS": "400"})
    assert listed.returncode == 0, listed.stderr
    lines = [line.strip() for line in listed.stdout.replace("┃", "│").splitlines()]
    rows = {
        cells[0]: cells[1:]
        for line in lines
        if line.startswith("│") and len(cells := [c.strip() for c in line[1:-1].split("│")]) == 4
    }
    assert rows == {
        "name": ["description", "chart", "schedule"],
        "active_users": [
            "DAU, WAU (7 days) and MAU (28 days) per day, and stickiness (DAU / MAU).",
            "line of dau, wau, mau",
            "",
        ],
        "daily_summary": [
            "Active users, orders and revenue (USD) per day.",
            "line of active_users",
            "daily, 28 days",
        ],
        "signup_funnel": [
            "New users per sign-up day and how many used a feature and ordered within 7 days "
            "(a day's cohort is final once 7 more days are built).",
            "bar of signed_up, used_feature_within_7d, ordered_within_7d",
            "weekly, 7 days",
        ],
        "weekly_retention": [
            "Users first active in a week (cohort) and the share of them active N weeks later.",
            "",
            "",
        ],
    }
    assert str(REPORTS_DIR) in listed.stdout


def test_rates_read_as_percentages_and_other_numbers_one_way(
    built: Settings, tmp_path: Path
) -> None:
    assert [format_cell(v, rate=True) for v in (1.0, 0.5712, 0.177, 0)] == [
        "100.0%",
        "57.1%",
        "17.7%",
        "0.0%",
    ]
    assert [format_cell(v) for v in (0.5, 1234.5, Decimal("2.125"), 1234, None)] == [
        "0.50",
        "1,234.50",
        "2.12",
        "1,234",
        "",
    ]
    active = query_report(built.serving_path, find_report(REPORTS_DIR, "active_users"), FIRST, LAST)
    page = write_report(active, tmp_path, "html").read_text()
    assert active.rows and all(isinstance(row[-1], float) for row in active.rows)
    for row in active.rows:
        assert f'<td class="number">{row[-1] * 100:.1f}%</td></tr>' in page
    retention = query_report(
        built.serving_path, find_report(REPORTS_DIR, "weekly_retention"), FIRST, LAST
    )
    page = write_report(retention, tmp_path, "html").read_text()
    rates = re.findall(r'<td class="number">([^<]*)</td></tr>', page)
    assert rates and "100.0%" in rates
    assert all(re.fullmatch(r"\d{1,3}\.\d%", rate) for rate in rates), rates


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (
            "name: bad\ndescription: x\nsql: select 1\nchart: {type: pie, x: a, y: b}\n",
            "chart.type",
        ),
        ("name: bad\nsql: select 1\nschedule: hourly\n", "schedule must be one of"),
        ("name: other\nsql: select 1\n", "must equal the file name"),
        ("name: bad\nsql: select 1\ncolour: red\n", "unknown field 'colour'"),
        ("name: bad\n", "field 'sql'"),
    ],
)
def test_a_broken_report_file_is_named_with_its_field(
    tmp_path: Path, text: str, needle: str
) -> None:
    path = tmp_path / "bad.yml"
    path.write_text(text)
    with pytest.raises(ReportError, match=re.escape(needle)) as error:
        load_report(path)
    assert str(path) in str(error.value)


def test_every_saved_report_loads() -> None:
    names = sorted(p.stem for p in REPORTS_DIR.glob("*.yml"))
    assert "daily_summary" in names
    assert [load_report(REPORTS_DIR / f"{name}.yml").name for name in names] == names


# The last Monday whose reports the built days hold (they end the day before): on a Monday
# the weekly reports are due beside the daily ones, so the schedule's tests see both.
MONDAY = LAST + dt.timedelta(days=1) - dt.timedelta(days=(LAST + dt.timedelta(days=1)).weekday())
SUNDAY = MONDAY - dt.timedelta(days=1)


def run_morning_schedule(built: Settings, defs: dg.Definitions) -> dg.ExecuteInProcessResult:
    """The daily reports schedule's tick on MONDAY morning, run to the end."""
    schedule = defs.resolve_schedule_def("daily_reports_schedule")
    tick = dt.datetime(MONDAY.year, MONDAY.month, MONDAY.day, 1, 0)
    # The tick's context opens its own instance; closing it here, before the run's instance,
    # keeps Dagster from pointing later definitions at a disposed instance's state storage.
    with (
        dg.DagsterInstance.from_config(str(built.dagster_home)) as instance,
        dg.build_schedule_context(instance=instance, scheduled_execution_time=tick) as context,
    ):
        request = schedule.evaluate_tick(context).run_requests[0]
        job = defs.resolve_job_def(request.job_name or "scheduled_reports")
        result = job.execute_in_process(run_config=request.run_config, instance=instance)
    assert result.success
    return result


def test_the_morning_schedule_writes_and_mails_the_daily_summary_for_yesterday(
    built: Settings, smtp: tuple[int, Inbox]
) -> None:
    port, inbox = smtp
    mailing = dataclasses.replace(
        built, smtp_host="127.0.0.1", smtp_port=port, report_email_to=("team@example.com",)
    )
    result = run_morning_schedule(built, build_definitions(mailing))
    written = result.output_for_node("write_scheduled_reports")
    daily = built.reports_output_dir / "daily_summary" / f"{SUNDAY}.html"
    weekly = built.reports_output_dir / "signup_funnel" / f"{SUNDAY}.html"
    assert sorted(written) == sorted([str(daily), str(weekly)])
    first = SUNDAY - dt.timedelta(days=27)
    assert f"daily_summary: {first} .. {SUNDAY}</h1>" in daily.read_text()
    assert f"signup_funnel: {SUNDAY - dt.timedelta(days=6)} .. {SUNDAY}</h1>" in weekly.read_text()
    # 28 days, of which the snapshot holds fewer: the page says so.
    held = snapshot_days(built)
    assert (
        f"The serving snapshot holds the days {held[0]} .. {held[1]}, so only part of "
        f"{first} .. {SUNDAY} has data" in daily.read_text()
    )
    # ... and so does the run, in the output's metadata shown in the Dagster UI.
    (output,) = [
        event
        for event in result.events_for_node("write_scheduled_reports")
        if event.event_type_value == "STEP_OUTPUT"
    ]
    notes = {k: v.value for k, v in output.step_output_data.metadata.items()}
    assert list(notes) == ["daily_summary_note"]
    assert notes["daily_summary_note"].startswith("The serving snapshot holds the days")
    assert [m["Subject"] for m in inbox.messages] == [
        f"Sluice report daily_summary: {SUNDAY}",
        f"Sluice report signup_funnel: {SUNDAY}",
    ]
    for message, page in zip(inbox.messages, (daily, weekly), strict=True):
        assert message["To"] == "team@example.com"
        assert next(message.iter_attachments()).get_content() == page.read_text()


def test_report_run_email_mails_the_file(built: Settings, smtp: tuple[int, Inbox]) -> None:
    port, inbox = smtp
    env = {"SLUICE_SMTP_HOST": "127.0.0.1", "SLUICE_SMTP_PORT": str(port)}
    env["SLUICE_REPORT_EMAIL_TO"] = "a@example.com, b@example.com"
    args = ("run", "signup_funnel", "--start", str(FIRST), "--end", str(LAST), "--format", "csv")
    result = sluice(built, *args, "--email", env=env)
    assert result.returncode == 0, result.stderr
    assert [m["To"] for m in inbox.messages] == ["a@example.com, b@example.com"]
    csv_file = built.reports_output_dir / "signup_funnel" / f"{LAST}.csv"
    assert next(inbox.messages[0].iter_attachments()).get_content() == csv_file.read_text()

    unset = sluice(built, *args, "--email")
    assert unset.returncode != 0 and "SLUICE_SMTP_HOST" in unset.stderr


def test_the_morning_schedule_posts_each_report_to_the_webhook(
    built: Settings, webhook: Webhook
) -> None:
    posting = dataclasses.replace(built, report_webhook_url=webhook.url)
    run_morning_schedule(built, build_definitions(posting))
    assert sorted(p["blocks"][0]["text"]["text"].split(":")[0] for p in webhook.posts) == [
        "daily_summary",
        "signup_funnel",
    ]
    post = next(p for p in webhook.posts if "daily_summary" in p["text"])
    page = built.reports_output_dir / "daily_summary" / f"{SUNDAY}.html"
    first = SUNDAY - dt.timedelta(days=27)
    last_day, active_users, orders = next(r for r in daily_rows(built) if r[0] == SUNDAY)
    assert post["text"].startswith(f"Sluice report daily_summary, {first} .. {SUNDAY}: ")
    assert (
        f"event_date {last_day}, active_users {active_users:,}, orders {orders:,}" in post["text"]
    )
    assert str(page) in post["text"]
    header, *_, context_block = post["blocks"]
    assert header["text"]["text"] == f"daily_summary: {first} .. {SUNDAY}"
    fields = next(b["fields"] for b in post["blocks"] if "fields" in b)
    assert {"type": "mrkdwn", "text": f"*active_users*\n{active_users:,}"} in fields
    assert str(page) in context_block["elements"][0]["text"]


def test_a_failed_delivery_fails_the_morning_run_at_once_without_retrying(
    built: Settings, webhook: Webhook
) -> None:
    webhook.status = 500
    defs = build_definitions(dataclasses.replace(built, report_webhook_url=webhook.url))
    job = defs.resolve_job_def("scheduled_reports")
    today = LAST + dt.timedelta(days=1)
    config = {"ops": {"write_scheduled_reports": {"config": {"day": today.isoformat()}}}}
    with dg.DagsterInstance.from_config(str(built.dagster_home)) as instance:
        began = time.monotonic()
        result = job.execute_in_process(run_config=config, instance=instance, raise_on_error=False)
    # A retry would wait 15 minutes and post (and mail) the reports again.
    assert not result.success and time.monotonic() - began < 60
    assert len(webhook.posts) == 1
    failure = result.failure_data_for_node("write_scheduled_reports")
    assert failure is not None
    assert "HTTP 500" in str(failure.error) and "SLUICE_REPORT_WEBHOOK_URL" in str(failure.error)
    assert (built.reports_output_dir / "daily_summary" / f"{LAST}.html").exists()


def test_report_run_webhook_posts_the_file_and_the_last_day(
    built: Settings, webhook: Webhook
) -> None:
    args = ("run", "signup_funnel", "--start", str(FIRST), "--end", str(LAST), "--format", "csv")
    result = sluice(built, *args, "--webhook", env={"SLUICE_REPORT_WEBHOOK_URL": webhook.url})
    assert result.returncode == 0, result.stderr
    csv_file = built.reports_output_dir / "signup_funnel" / f"{LAST}.csv"
    [post] = webhook.posts
    assert f"signup_funnel, {FIRST} .. {LAST}" in post["text"]
    assert str(csv_file) in post["text"]
    last = csv_file.read_text().splitlines()[-1].split(",")
    assert f"event_date {last[0]}" in post["text"]

    unset = sluice(built, *args, "--webhook")
    assert unset.returncode != 0 and "SLUICE_REPORT_WEBHOOK_URL" in unset.stderr

    webhook.status = 403
    refused = sluice(built, *args, "--webhook", env={"SLUICE_REPORT_WEBHOOK_URL": webhook.url})
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "HTTP 403" in refused.stderr and "SLUICE_REPORT_WEBHOOK_URL" in refused.stderr


def test_a_failed_post_names_the_webhook_and_the_setting_never_its_secret_path(
    built: Settings, webhook: Webhook
) -> None:
    saved = find_report(REPORTS_DIR, "daily_summary")
    result = query_report(built.serving_path, saved, FIRST, LAST)
    path = write_report(result, built.reports_output_dir, "csv")

    def failure(url: str, timeout: float = 5) -> str:
        with pytest.raises(DeliveryError) as error:
            post_webhook(result, path, url, timeout=timeout)
        message = str(error.value)
        assert f"{url.split('/services/')[0]}/..." in message
        assert "SLUICE_REPORT_WEBHOOK_URL" in message and "secret-token" not in message
        return message

    webhook.status = 500
    assert "HTTP 500: invalid_token" in failure(webhook.url)
    webhook.status = 301  # a redirect would turn the POST into a GET: not delivered
    assert "HTTP 301" in failure(webhook.url)
    webhook.status, webhook.delay = 200, 2.0
    assert "no answer in 0.3 s" in failure(webhook.url, timeout=0.3)
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}/services/T000/B000/secret-token"
    assert "refused" in failure(closed).lower()


def test_the_webhook_setting_must_be_an_http_url(tmp_path: Path) -> None:
    env = {"SLUICE_DATA_DIR": str(tmp_path)}
    url = "https://hooks.example.com/services/T/B/x"
    assert load_settings({**env, "SLUICE_REPORT_WEBHOOK_URL": url}).report_webhook_url == url
    assert load_settings(env).report_webhook_url == ""
    for bad in ("hooks.example.com/services/x", "ftp://example.com/x", "https://"):
        with pytest.raises(SettingsError, match="SLUICE_REPORT_WEBHOOK_URL"):
            load_settings({**env, "SLUICE_REPORT_WEBHOOK_URL": bad})
