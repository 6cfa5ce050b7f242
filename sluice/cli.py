"""The ``sluice`` command line: generate, load, materialize, demo, live-demo, status,
retention, compact, dev, serve, stream, alerts, slo, keys, report.

Runs go through the Dagster instance in the data directory, so the UI shows them; a run's
logs go to the data directory's run log, and the command prints what the run loaded and built.
Errors a user can cause print one line and exit non-zero. Output that is not to a terminal
(a log, a pipe, CI) is plain full lines: nothing wrapped or cut, no spinners. Settings come
from ``common.settings``.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.table import Table

from common.settings import (
    RAW_REJECTED_TABLE,
    RAW_SCHEMA,
    Settings,
    SettingsError,
    load_settings,
    parse_date,
    record_start_date,
)

if TYPE_CHECKING:
    from common.keys import KeyStore
    from sluice.runs import RunOutcome

# Wide enough for any line or table Sluice prints: only a limit that nothing reaches.
_UNLIMITED_WIDTH = 100_000


def _make_console() -> Console:
    """A console on stdout. In a terminal, rich's own (wrapped to its width, with spinners);
    elsewhere (a log, a pipe, CI) full lines, as printed, and tables at their natural width,
    so nothing is wrapped or cut to a width nobody sees (nor to ``COLUMNS``)."""
    if sys.stdout.isatty():
        return Console(file=sys.stdout)
    return Console(file=sys.stdout, width=_UNLIMITED_WIDTH, soft_wrap=True, highlight=False)


# Bound to the terminal now: runs send dbt's own console output to the run log.
console = _make_console()

DEMO_DAYS = 30
DEMO_USERS = 2000
DEMO_SEED = 42


def _settings() -> Settings:
    from orchestration.prepare import check_dagster_home

    try:
        settings = load_settings()
        # A data directory whose Dagster instance is on PostgreSQL, without its URL here.
        check_dagster_home(settings)
    except SettingsError as error:
        raise click.ClickException(str(error)) from None
    return settings


def _date(_ctx: click.Context, param: click.Parameter, value: str | None) -> dt.date | None:
    if value is None:
        return None
    try:
        return parse_date(value, f"--{param.name}")
    except SettingsError as error:
        raise click.BadParameter(f"{value!r} is not a date; use YYYY-MM-DD") from error


def _fail(message: str) -> None:
    raise click.ClickException(message)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Sluice: product events in, DAU and revenue out."""


@main.command()
@click.option("--start", required=True, callback=_date, help="First day, YYYY-MM-DD.")
@click.option("--days", default=30, show_default=True, type=click.IntRange(1, 3660))
@click.option("--users", default=2000, show_default=True, type=click.IntRange(1, 100_000_000))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Default: landing.")
def generate(start: dt.date, days: int, users: int, seed: int, out: Path | None) -> None:
    """Write synthetic product events as JSON-lines files, one per day."""
    from ingestion.generator import generate as write_events

    settings = _settings()
    target = out or settings.landing_dir
    with console.status(f"generating {days} days for {users} users"):
        result = write_events(target, start, days, users, seed)
    if out is None:
        record_start_date(settings, start)
    console.print(
        f"wrote {result.lines:,} lines ({result.events:,} events, {result.duplicates:,} "
        f"duplicates, {result.late:,} late, {result.malformed:,} malformed) "
        f"in {len(result.files)} files to {target}"
    )


def _report_run(outcome: RunOutcome, what: str) -> None:
    """One line for the run, then what it loaded and built (a failure is one line only)."""
    if not outcome.success:
        _fail(f"{what} failed (run {outcome.run_id}): {outcome.message}")
    for warning in outcome.warnings:
        click.echo(f"warning: {warning}", err=True)
    console.print(f"{what} succeeded (run {outcome.run_id})", markup=False)
    for line in run_summary(outcome):
        console.print(line, markup=False)


def _count(number: int, noun: str) -> str:
    plural = "es" if noun.endswith(("s", "ch", "sh", "x")) else "s"
    return f"{number:,} {noun}{'' if number == 1 else plural}"


def run_summary(outcome: RunOutcome) -> list[str]:
    """The lines that say what a run did: files and rows loaded and rejected, days built, and
    the rows of each fact and mart in the days it rebuilt."""
    lines = []
    load = outcome.load
    if load is not None:
        lines.append(
            f"loaded {_count(load.loaded_rows, 'row')} from {_count(load.new_files, 'new file')}"
            f" ({_count(load.skipped_files, 'file')} loaded before)"
        )
        rejected = f"rejected {_count(load.rejected_rows, 'row')}"
        if load.rejected_rows:
            reasons = ", ".join(
                f"{count:,} {reason}"
                for reason, count in sorted(
                    load.rejected_by_reason.items(), key=lambda item: (-item[1], item[0])
                )
            )
            rejected += f" ({reasons}): see {RAW_SCHEMA}.{RAW_REJECTED_TABLE}"
        lines.append(rejected)
    days = outcome.days_built
    if days:
        span = days[0] if len(days) == 1 else f"{days[0]} .. {days[-1]}"
        lines.append(f"built {_count(len(days), 'day')} ({span})")
    if outcome.rows_in_window:
        lines.append("rows in the days each model rebuilt:")
        width = max(len(key) for key in outcome.rows_in_window)
        lines += [f"  {key:<{width}}  {rows:>12,}" for key, rows in outcome.rows_in_window.items()]
    return lines


@main.command()
def load() -> None:
    """Load every landing file not loaded before into the raw schema."""
    from sluice.runs import run_job

    settings = _settings()
    if not settings.landing_dir.is_dir():
        _fail(f"no landing folder at {settings.landing_dir}; run `sluice generate` first")
    with console.status("loading landing files"):
        outcome = run_job(settings, "load")
    _report_run(outcome, "load")


@main.command()
@click.option("--start", required=True, callback=_date, help="First day, YYYY-MM-DD.")
@click.option("--end", required=True, callback=_date, help="Last day (included), YYYY-MM-DD.")
def materialize(start: dt.date, end: dt.date) -> None:
    """Load, then build facts and marts for START..END as one run (one dbt invocation)."""
    from sluice.runs import check_range, materialize_range

    settings = _settings()
    try:
        check_range(settings, start, end)
    except ValueError as error:
        _fail(str(error))
    if not settings.landing_dir.is_dir():
        _fail(f"no landing folder at {settings.landing_dir}; run `sluice generate` first")
    with console.status(f"loading and building {start} .. {end}"):
        outcome = materialize_range(settings, start, end)
    _report_run(outcome, f"materialize {start} .. {end}")


@main.command()
def demo() -> None:
    """Generate 30 days for ~2,000 users, load, build, and print DAU and revenue by day."""
    from ingestion.generator import generate as write_events
    from sluice.runs import check_engine, materialize_range, run_job

    settings = _settings()
    check_engine(settings)  # before writing anything
    last = dt.date.today() - dt.timedelta(days=1)
    first = last - dt.timedelta(days=DEMO_DAYS - 1)
    if "SLUICE_START_DATE" not in os.environ:
        record_start_date(settings, first)
        settings = _settings()
    if settings.start_date > first:
        _fail(f"SLUICE_START_DATE={settings.start_date} is after the demo's first day {first}")
    with console.status("[1/4] generating events") as status:
        result = write_events(settings.landing_dir, first, DEMO_DAYS, DEMO_USERS, DEMO_SEED)
        console.print(f"[1/4] generated {result.lines:,} lines for {first} .. {last}")
        status.update("[2/4] loading and building facts and marts (one Dagster run)")
        outcome = materialize_range(settings, first, last)
        _report_run(outcome, "[2/4] load and build")
        status.update("[3/4] checking yesterday's partitions")
        checked = run_job(settings, "check_yesterday")
        _report_run(checked, "[3/4] check")
    console.print("[4/4] DAU and revenue by day")
    print_daily_table(settings, first, last)
    console.print(
        f"\nServing snapshot (what BI tools read): {settings.serving_path}\n"
        f"Warehouse: {_warehouse_location(settings)}\nOpen the Dagster UI with `make dev` "
        f"(http://127.0.0.1:{settings.dagster_port})."
    )


def _warehouse_location(settings: Settings) -> str:
    if settings.warehouse_engine == "spark":
        return f"Spark tables in {settings.spark_warehouse_dir}, raw Parquet in {settings.lake_dir}"
    return str(settings.warehouse_path)


@main.command("live-demo")
@click.option(
    "--seconds",
    default=20.0,
    show_default=True,
    type=click.FloatRange(0),
    help="How long to send events; 0 sends until Ctrl-C.",
)
@click.option("--rate", default=50, show_default=True, type=click.IntRange(10, 100_000))
@click.option("--port", default=None, type=click.IntRange(1, 65535), help="Default: a free one.")
def live_demo(seconds: float, rate: int, port: int | None) -> None:
    """Start `sluice serve` and `sluice stream`, send RATE events a second through the API and
    print the live figures as they appear (the dashboard's live panel shows the same)."""
    from sluice.live_demo import LiveDemoError, run

    try:
        totals = run(_settings(), seconds, rate, port, click.echo)
    except LiveDemoError as error:
        _fail(str(error))
    if totals.visible < totals.sent:
        _fail(f"only {totals.visible:,} of {totals.sent:,} events became visible")
    lag = "" if totals.lag_p95 is None else f", p95 {totals.lag_p95:.2f} s after the API's ack"
    click.echo(f"all {totals.sent:,} events sent through the API are in the live figures{lag}")


def print_daily_table(settings: Settings, first: dt.date, last: dt.date) -> None:
    """Read like any BI tool would: from the serving snapshot, never the warehouse."""
    from serving.snapshot import connect_snapshot

    with connect_snapshot(settings.serving_path) as con:
        rows = con.execute(
            """
            select dau.event_date, dau.active_users, revenue.orders, revenue.paying_users,
                   revenue.revenue_usd
            from marts.dau as dau
            left join marts.revenue_daily as revenue using (event_date)
            where dau.event_date between ? and ?
            order by dau.event_date
            """,
            [first, last],
        ).fetchall()
    table = Table(title=f"Sluice: {first} .. {last}")
    for name in ("day", "active users", "orders", "paying users", "revenue (USD)"):
        table.add_column(name, justify="right")
    for day, dau, orders, payers, revenue in rows:
        table.add_row(
            day.isoformat(),
            f"{dau:,}",
            f"{orders or 0:,}",
            f"{payers or 0:,}",
            f"{revenue or 0:,.2f}",
        )
    console.print(table)


@main.command()
def status() -> None:
    """Partitions materialized / missing / failed per asset, the last run, and freshness."""
    from sluice.status import collect_status

    settings = _settings()
    report = collect_status(settings)
    table = Table(title=f"Sluice assets ({settings.data_dir})")
    for name in ("asset", "materialized", "missing", "failed", "last materialized", "freshness"):
        table.add_column(name)
    for row in report.assets:
        table.add_row(
            row.key,
            row.materialized,
            row.missing,
            row.failed,
            row.last_materialized,
            row.freshness,
        )
    console.print(table)
    console.print(f"last run: {report.last_run}")


@main.command()
@click.option(
    "--apply", is_flag=True, help="Drop them. Without it, only show what would be dropped."
)
def retention(apply: bool) -> None:
    """Show the days past each layer's retention horizon (SLUICE_RETENTION_*_DAYS) and the
    landing files loaded long ago; with --apply, drop them (the `retention` job)."""
    from orchestration.maintain.jobs import RETENTION_JOB, RETENTION_OP, refusal
    from orchestration.maintain.retention import describe
    from sluice.runs import run_job

    settings = _settings()
    refused = refusal(settings, RETENTION_JOB)
    if refused is not None:
        _fail(refused)
    with console.status("dropping old days" if apply else "counting old days"):
        outcome = run_job(settings, RETENTION_JOB, op_config={RETENTION_OP: {"apply": apply}})
    what = "retention" if apply else "retention (dry run)"
    if not outcome.success:
        _fail(f"{what} failed (run {outcome.run_id}): {outcome.message}")
    console.print(f"{what} succeeded (run {outcome.run_id})", markup=False)
    for line in describe(outcome.outputs[RETENTION_OP]["retention"]):
        console.print(line, markup=False)
    if not apply:
        console.print("nothing was dropped: run `sluice retention --apply` to drop it")


@main.command()
def compact() -> None:
    """Rewrite the warehouse into a new file without the space deletes left free, and swap it
    in (the `compact` job); prints its size before and after."""
    from orchestration.maintain.compaction import describe
    from orchestration.maintain.jobs import COMPACT_JOB, COMPACT_OP, refusal
    from sluice.runs import run_job

    settings = _settings()
    refused = refusal(settings, COMPACT_JOB)
    if refused is not None:
        _fail(refused)
    if not settings.warehouse_path.exists():
        _fail(f"no warehouse at {settings.warehouse_path}; nothing to compact")
    with console.status("compacting the warehouse"):
        outcome = run_job(settings, COMPACT_JOB)
    if not outcome.success:
        _fail(f"compact failed (run {outcome.run_id}): {outcome.message}")
    console.print(f"compact succeeded (run {outcome.run_id})", markup=False)
    for line in describe(outcome.outputs[COMPACT_OP]["compaction"]):
        console.print(line, markup=False)


@main.command()
def dev() -> None:
    """Start the Dagster UI and daemon on this data directory's instance."""
    from common.settings import REPO_DIR
    from orchestration.prepare import prepare

    settings = _settings()
    prepare(settings)
    # `dg dev` with a workspace file starts the webserver and the daemon as `dagster dev`
    # did, which Dagster 1.13 marks superseded.
    dg = Path(sys.executable).with_name("dg")
    args = [str(dg), "dev", "-w", str(REPO_DIR / "workspace.yaml")]
    args += ["-h", "127.0.0.1", "-p", str(settings.dagster_port)]
    os.chdir(REPO_DIR)
    os.execve(str(dg), args, {**os.environ, **settings.subprocess_env()})


@main.command()
@click.option("--host", default=None, help="Address to listen on. Default: SLUICE_API_HOST.")
@click.option(
    "--port", default=None, type=click.IntRange(1, 65535), help="Default: SLUICE_API_PORT."
)
def serve(host: str | None, port: int | None) -> None:
    """Run the ingest API (Segment's HTTP Tracking API) in front of the landing area, and the
    query API and dashboard over the serving snapshot."""
    from ingestion.api.segments import LandingLocked
    from sluice.server import serve as run_server
    from sluice.slo import SloFileError

    settings = _settings()
    host = host or settings.api_host
    port = port or settings.api_port
    console.print(f"ingest API on http://{host}:{port} writing to {settings.api_sources_dir}")
    try:
        run_server(settings, host, port)
    except (LandingLocked, SloFileError) as error:
        _fail(str(error))


@main.command()
@click.option("--once", is_flag=True, help="Process what the segments hold now, then exit.")
def stream(once: bool) -> None:
    """Fold the ingest API's landing segments into minute windows (the real-time store), as
    they are written, until Ctrl-C or SIGTERM; run it beside `sluice serve`. With
    SLUICE_STREAM_NATS_URL set, consume the JetStream stream instead (several may run)."""
    import signal
    import threading

    from common.stream import StreamUnavailable
    from realtime.alerts import AlertEngine
    from realtime.windows import utc
    from realtime.worker import Step, StreamWorker, WorkerLocked

    settings = _settings()

    def report(step: Step) -> None:
        newest = "" if step.max_event_at is None else f"; newest event {utc(step.max_event_at)}"
        click.echo(
            f"read {_count(step.lines, 'line')} from {step.origin}: "
            f"{step.added:,} added, {step.duplicates:,} duplicates, {step.late:,} late, "
            f"{step.invalid:,} invalid{newest}"
        )

    try:
        worker = StreamWorker(settings)
    except (WorkerLocked, StreamUnavailable) as error:
        _fail(str(error))
    with worker:
        click.echo(
            f"reading {worker.reading} into {settings.realtime_store_path}"
            + ("" if once else " (Ctrl-C to stop)")
        )
        if once:
            batches = worker.run_once(report)
            click.echo(f"committed {_count(batches, 'batch')}; nothing new to read")
            return
        stop = threading.Event()
        # Stop between batches, not inside one: a batch is committed whole either way.
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda _signum, _frame: stop.set())
        # The alert rules are evaluated beside the worker, in a thread that logs its errors.
        alerts = AlertEngine(settings, log=click.echo)
        click.echo(alerts.describe())
        alerting = threading.Thread(target=alerts.run, args=(stop,), name="alerts", daemon=True)
        alerting.start()
        worker.run(stop, report)
        alerting.join(timeout=15)
        click.echo("stopped; every batch read is committed")


@main.command()
def alerts() -> None:
    """The data alert rules (reports/alerts/*.yml) that `sluice stream` evaluates, and the
    state it left each in, then the platform's alerts firing (failed runs and checks, stale
    assets, query budgets); exits non-zero when a file or rule is broken."""
    from common.settings import ALERTS_DIR
    from realtime.alerts import AlertEngine, load_rules

    settings = _settings()
    table = Table(title=f"Alert rules ({ALERTS_DIR})")
    for column in ("rule", "fires when", "state", "since", "last value", "last notified"):
        table.add_column(column)
    for status in AlertEngine(settings, log=lambda _line: None).status():
        cells = (status.since, status.value, status.notified)
        table.add_row(
            status.rule.name, status.rule.condition, status.state, *(c or "" for c in cells)
        )
    console.print(table)
    # The platform's alerts (the Dagster alert sensor's and the query budgets'): those firing.
    from common.alerting import EventAlerts

    firing = EventAlerts(settings, dt.timedelta(0), log=lambda _line: None).firing()
    click.echo(f"Platform alerts firing ({settings.alerts_path}): {len(firing) or 'none'}")
    for name, text in firing.items():
        click.echo(f"  {name}: {text}")
    errors = load_rules(ALERTS_DIR)[1]
    for error in errors:
        click.echo(error, err=True)
    if errors:
        _fail(f"{_count(len(errors), 'mistake')} in the alert rules (left out by `sluice stream`)")


@main.command()
def slo() -> None:
    """Each SLO of ops/slos.yml: objective, SLI over the window, error budget left, and burn
    rate over the last hour and 6 hours, from what sluice serve, the Dagster runs and sluice
    stream recorded in the data directory."""
    from common.settings import SLO_FILE
    from sluice.slo import TABLE_HEADER, SloFileError, load_slos, measure, table_rows

    settings = _settings()
    # The Dagster instance's configuration names its home by DAGSTER_HOME.
    os.environ.update(settings.subprocess_env())
    try:
        slos = load_slos(SLO_FILE)
    except SloFileError as error:
        _fail(str(error))
    table = Table(title=f"SLOs over the last {slos.window.days} days ({SLO_FILE})")
    for column in TABLE_HEADER:
        table.add_column(column)
    for row in table_rows(measure(settings, slos)):
        table.add_row(*row)
    console.print(table)
    console.print(
        "events: requests (ingest, query), minutes (batch_freshness), events (realtime_lag, "
        "over what the real-time store keeps); burn rate: the bad share / the budget's share"
    )


@main.group()
def spark() -> None:
    """The Spark engine's cluster on this machine (SLUICE_WAREHOUSE_ENGINE=spark): a master,
    SLUICE_SPARK_WORKERS workers and the Thrift server that dbt connects to."""


@spark.command("up")
def spark_up() -> None:
    """Start the cluster and wait until every worker and the Thrift server answer."""
    import time

    from common.spark import SparkError, up

    settings = _settings()
    began = time.monotonic()
    try:
        with console.status("starting the Spark cluster"):
            started = up(settings)
    except SparkError as error:
        _fail(str(error))
    if started is None:
        console.print(
            f"the Spark cluster of {settings.spark_dir} already runs (see `sluice spark "
            "status`; `sluice spark down` stops it)"
        )
        return
    console.print(
        f"Spark cluster up in {time.monotonic() - began:.0f} s: master {started.master_url} "
        f"(web UI {started.ui_url}), {started.workers_alive} workers, Thrift server "
        f"{started.thrift_url}; logs in {settings.spark_dir / 'logs'}"
    )


@spark.command("down")
def spark_down() -> None:
    """Stop the Thrift server, the workers and the master."""
    from common.spark import down

    settings = _settings()
    with console.status("stopping the Spark cluster"):
        stopped = down(settings)
    if stopped:
        console.print(f"stopped {', '.join(stopped)}")
    else:
        console.print(f"no Spark cluster of {settings.spark_dir} was running")


@spark.command("status")
def spark_status() -> None:
    """Each process of the cluster, the workers the master lists, and whether the Thrift
    server answers; exits 1 unless all of it is up."""
    from common.spark import status as cluster_status

    settings = _settings()
    report = cluster_status(settings)
    table = Table(title=f"Spark cluster ({settings.spark_dir})")
    for column in ("process", "pid", "state", "log"):
        table.add_column(column)
    for process in report.processes:
        state = "running" if process.alive else "stopped"
        table.add_row(process.name, str(process.pid or ""), state, str(process.log))
    console.print(table)
    listed = "?" if report.workers_alive is None else str(report.workers_alive)
    console.print(
        f"master {report.master_url} (web UI {report.ui_url}): {listed} of "
        f"{report.workers_expected} workers alive",
        markup=False,
    )
    answering = "answers" if report.thrift_answering else "does not answer"
    console.print(f"Thrift server {report.thrift_url} {answering}", markup=False)
    if not report.up:
        sys.exit(1)


@main.group()
def keys() -> None:
    """Keys of sluice serve, stored as hashes only: write keys (one per source) send events,
    read keys (--read) read the query API and the dashboard."""


def _key_store() -> KeyStore:
    from common.keys import KeyStore

    return KeyStore(_settings().api_keys_path)


@keys.command("create")
@click.argument("name")
@click.option(
    "--read", is_flag=True, help="A read key (query API, dashboard) instead of a write key."
)
def keys_create(name: str, read: bool) -> None:
    """Create a write key for the source NAME (or, with --read, a read key named NAME) and
    print it (it is shown only this once)."""
    from common.keys import KeyFileError

    try:
        key = _key_store().create(name, kind="read" if read else "write")
    except KeyFileError as error:
        _fail(str(error))
    click.echo(key)
    what = f"read key {name!r}" if read else f"write key for source {name!r}"
    click.echo(f"{what}; it is not stored and will not be shown again", err=True)


@keys.command("list")
def keys_list() -> None:
    """Key names, their kind (write or read), when they were created, and if revoked."""
    from common.keys import KeyFileError

    try:
        entries = _key_store().list()
    except KeyFileError as error:
        _fail(str(error))
    table = Table(title="Keys of sluice serve")
    for column in ("name (source)", "kind", "created", "revoked"):
        table.add_column(column)
    for entry in entries:
        table.add_row(entry.name, entry.kind, entry.created_at, entry.revoked_at or "")
    console.print(table)


@keys.command("revoke")
@click.argument("name")
def keys_revoke(name: str) -> None:
    """Revoke the key of NAME; a running server refuses it from the next request."""
    from common.keys import KeyFileError

    try:
        _key_store().revoke(name)
    except KeyFileError as error:
        _fail(str(error))
    console.print(f"revoked the key {name!r}")


@main.group()
def report() -> None:
    """Saved reports (reports/*.yml) over the serving snapshot, as HTML or CSV files."""


@report.command("list")
def report_list() -> None:
    """The saved reports, their schedules and charts."""
    from common.settings import REPORTS_DIR
    from serving.reports import ReportError, list_reports

    try:
        reports = list_reports(REPORTS_DIR)
    except ReportError as error:
        _fail(str(error))
    table = Table(title=f"Saved reports ({REPORTS_DIR})")
    for column in ("name", "description", "chart", "schedule"):
        table.add_column(column)
    for saved in reports:
        chart = "" if saved.chart is None else f"{saved.chart.kind} of {', '.join(saved.chart.y)}"
        schedule = f"{saved.schedule}, {saved.window_days} days" if saved.schedule else ""
        table.add_row(saved.name, saved.description, chart, schedule)
    console.print(table)


@report.command("run")
@click.argument("name")
@click.option("--start", required=True, callback=_date, help="First day, YYYY-MM-DD.")
@click.option("--end", required=True, callback=_date, help="Last day (included), YYYY-MM-DD.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["html", "csv"]),
    default="html",
    show_default=True,
    help="A self-contained HTML page with a chart, or CSV.",
)
@click.option(
    "--email", is_flag=True, help="Also mail it to SLUICE_REPORT_EMAIL_TO via SLUICE_SMTP_HOST."
)
@click.option(
    "--webhook",
    is_flag=True,
    help="Also post it to SLUICE_REPORT_WEBHOOK_URL (Slack-compatible JSON).",
)
def report_run(
    name: str, start: dt.date, end: dt.date, fmt: str, email: bool, webhook: bool
) -> None:
    """Run the saved report NAME for START..END on the serving snapshot and write a file."""
    from common.settings import REPORTS_DIR
    from serving.delivery import DeliveryError, post_webhook, send_report
    from serving.reports import ReportError, find_report, query_report, require_rows, write_report
    from serving.snapshot import SnapshotMissing

    settings = _settings()
    try:
        saved = find_report(REPORTS_DIR, name)
        result = query_report(settings.serving_path, saved, start, end)
        require_rows(result)  # an empty file (or mail) would read as a day without users
        path = write_report(result, settings.reports_output_dir, fmt)
        console.print(f"wrote {path}")
        if email:
            recipients = settings.report_email_to
            send_report(
                saved,
                path,
                settings.smtp_host,
                settings.smtp_port,
                settings.report_email_from,
                recipients,
            )
            console.print(f"mailed to {', '.join(recipients)}")
        if webhook:
            post_webhook(result, path, settings.report_webhook_url)
            console.print("posted to the webhook (SLUICE_REPORT_WEBHOOK_URL)")
    except (ReportError, SnapshotMissing, DeliveryError) as error:
        _fail(str(error))
