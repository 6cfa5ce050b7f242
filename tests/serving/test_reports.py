"""Saved reports as a user meets them: `sluice report run` on the serving snapshot, and the
morning schedule. Reads the data directory built once for tests/serving (conftest.py)."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime as dt
import email
import email.policy
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest
from aiosmtpd.controller import Controller

from orchestration.definitions import build_definitions
from serving.delivery import DeliveryError, post_webhook
from serving.reports import ReportError, find_report, load_report, query_report, write_report
from serving.snapshot import connect_snapshot
from sluice.settings import REPORTS_DIR, Settings, SettingsError, load_settings
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


class Inbox:
    """aiosmtpd handler: keeps every message the SMTP server on 127.0.0.1 receives."""

    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []

    async def handle_DATA(self, server, session, envelope) -> str:
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append(parsed)  # type: ignore[arg-type]
        return "250 OK"


@pytest.fixture
def smtp_server() -> Iterator[tuple[int, Inbox]]:
    inbox = Inbox()
    with socket.socket() as probe:  # a free port (aiosmtpd checks readiness on the port given)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port, inbox
    finally:
        controller.stop()


class Webhook:
    """A chat webhook on 127.0.0.1: keeps the JSON of every POST, answers ``status`` after
    ``delay`` seconds."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.status = 200
        self.delay = 0.0
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                assert self.headers["Content-Type"].startswith("application/json")
                hook.posts.append(json.loads(self.rfile.read(length)))
                time.sleep(hook.delay)
                body = b"ok" if hook.status < 300 else b"invalid_token"
                # A client that timed out has gone: nothing to answer.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.send_response(hook.status)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/services/T000/B000/secret-token"


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    thread = threading.Thread(target=hook.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        hook.server.shutdown()
        hook.server.server_close()
        thread.join(5)


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


def run_morning_schedule(
    built: Settings, defs: dg.Definitions
) -> tuple[dt.date, dg.ExecuteInProcessResult]:
    """The daily reports schedule's tick on the morning after LAST, run to the end."""
    schedule = defs.resolve_schedule_def("daily_reports_schedule")
    today = LAST + dt.timedelta(days=1)
    tick = dt.datetime(today.year, today.month, today.day, 1, 0)
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
    return today, result


def test_the_morning_schedule_writes_and_mails_the_daily_summary_for_yesterday(
    built: Settings, smtp_server: tuple[int, Inbox]
) -> None:
    port, inbox = smtp_server
    mailing = dataclasses.replace(
        built, smtp_host="127.0.0.1", smtp_port=port, report_email_to=("team@example.com",)
    )
    today, result = run_morning_schedule(built, build_definitions(mailing))
    page = built.reports_output_dir / "daily_summary" / f"{LAST}.html"
    assert str(page) in result.output_for_node("write_scheduled_reports")
    first = LAST - dt.timedelta(days=27)
    assert f"daily_summary: {first} .. {LAST}" in page.read_text()
    # On a Monday the weekly signup_funnel is due too.
    assert len(inbox.messages) == (2 if today.weekday() == 0 else 1)
    message = next(m for m in inbox.messages if "daily_summary" in m["Subject"])
    assert message["To"] == "team@example.com"
    assert message["Subject"] == f"Sluice report daily_summary: {LAST}"
    attachment = next(message.iter_attachments())
    assert attachment.get_content() == page.read_text()


def test_report_run_email_mails_the_file(built: Settings, smtp_server: tuple[int, Inbox]) -> None:
    port, inbox = smtp_server
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
    today, _ = run_morning_schedule(built, build_definitions(posting))
    # On a Monday the weekly signup_funnel is due too.
    assert len(webhook.posts) == (2 if today.weekday() == 0 else 1)
    post = next(p for p in webhook.posts if "daily_summary" in p["text"])
    page = built.reports_output_dir / "daily_summary" / f"{LAST}.html"
    first = LAST - dt.timedelta(days=27)
    last_day, active_users, orders = daily_rows(built)[-1]
    assert post["text"].startswith(f"Sluice report daily_summary, {first} .. {LAST}: ")
    assert (
        f"event_date {last_day}, active_users {active_users:,}, orders {orders:,}" in post["text"]
    )
    assert str(page) in post["text"]
    header, *_, context_block = post["blocks"]
    assert header["text"]["text"] == f"daily_summary: {first} .. {LAST}"
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
