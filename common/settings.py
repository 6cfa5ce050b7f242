"""Every Sluice setting, declared once and read from the environment.

Each setting is a field of ``Settings`` declared with ``setting(...)``: its environment
variable, type, default, bounds and description, in one place. ``load_settings`` reads them
all (every variable is optional; the defaults work on a laptop), and the README's settings
table is printed from the same declarations (``python -m common.settings --markdown``; a
test keeps the README equal to it). Paths under the data directory and the recorded start
date are derived from the declared settings, not settings of their own.

Hand-written rather than pydantic-settings: that package is not a dependency here, and its
validation errors would have to be reworded anyway to name the variable in one line.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import re
import shutil
import sys
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

REPO_DIR = Path(__file__).resolve().parent.parent
DBT_PROJECT_DIR = REPO_DIR / "dbt_project"
DAGSTER_YAML_TEMPLATE = REPO_DIR / "orchestration" / "dagster.yaml"
SAMPLE_DIR = REPO_DIR / "data" / "sample"
# The dbt seed of currency rates: the marts convert revenue with it, and so does the real-time
# worker (realtime/revenue.py), so both give the same dollars.
CURRENCY_RATES_SEED = DBT_PROJECT_DIR / "seeds" / "currency_rates.csv"
# Saved reports (YAML); see serving/reports.py.
REPORTS_DIR = REPO_DIR / "reports"
# Data alert rules (YAML), beside the saved reports; see realtime/alerts.py.
ALERTS_DIR = REPORTS_DIR / "alerts"
# Service level objectives (YAML); see sluice/slo.py.
SLO_FILE = REPO_DIR / "ops" / "slos.yml"


def dbt_executable() -> str:
    """The dbt installed beside this Python (the project's venv), else the one on PATH."""
    beside = Path(sys.executable).with_name("dbt")
    return str(beside) if beside.exists() else shutil.which("dbt") or "dbt"


# Table names shared by the loader, the dbt sources and the orchestration.
RAW_SCHEMA = "raw"
RAW_EVENTS_TABLE = "events"
RAW_REJECTED_TABLE = "rejected_events"
MARTS_SCHEMA = "marts"

# The dagster pool that every asset opening the warehouse joins; its limit is 1. On DuckDB
# because the file has one writer. On Spark too: replace_window drops a window's partitions and
# then overwrites them dynamically, fct_events reads the days next to its window, and Spark's
# Derby metastore lives in the one Thrift server, so two windows built side by side could see
# each other half-done. (The name predates Spark; renaming it would change every asset's spec.)
WAREHOUSE_POOL = "duckdb_warehouse"

START_DATE_FILE = "start_date"

# Per-day asset events per event-log write: a year of days for one asset.
DAGSTER_EVENT_BATCH_SIZE = 400

# Named apart from their declarations below because dbt_project/profiles.yml falls back to the
# same values for an analyst running dbt by hand (tests/dbt_project checks that it does).
DEFAULT_DUCKDB_MEMORY_LIMIT = "1GB"
DEFAULT_DUCKDB_THREADS = 2
DEFAULT_DATA_DIR = "data"
# Without SLUICE_START_DATE or a recorded first day, the partitions start this many days ago.
START_DATE_FALLBACK_DAYS = 30

_MEMORY_LIMIT = re.compile(r"^\d+(\.\d+)?\s*([KMGT]i?B|%)$", re.IGNORECASE)

T = TypeVar("T")


class SettingsError(ValueError):
    """A setting has a value Sluice cannot use; the message names the setting."""


def parse_date(value: str, setting: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value.strip())
    except ValueError:
        raise SettingsError(f"{setting}={value!r} is not a date; use YYYY-MM-DD") from None


def _memory_limit(variable: str, raw: str) -> str:
    if not _MEMORY_LIMIT.match(raw):
        raise SettingsError(
            f"{variable}={raw!r} is not an amount of memory; use a size such as 150MB, 4GB or "
            "2GiB, or a share of the machine's memory such as 25%"
        )
    return raw


def _url(variable: str, raw: str) -> str:
    parts = urllib.parse.urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        # The value may hold a secret (a webhook's path): name the setting, not the value.
        raise SettingsError(f"{variable} must be an http:// or https:// URL with a host")
    return raw


def _nats_urls(variable: str, raw: str) -> str:
    for url in raw.split(","):
        parts = urllib.parse.urlsplit(url.strip())
        if parts.scheme not in ("nats", "tls", "ws", "wss") or not parts.hostname:
            # A URL may hold a password: name the setting, not the value.
            raise SettingsError(
                f"{variable} must be nats:// URLs with a host (several separated by commas), "
                "such as nats://127.0.0.1:4222"
            )
    return raw


def _nats_name(variable: str, raw: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", raw):
        raise SettingsError(
            f"{variable}={raw!r} is not a usable JetStream name: use letters, digits, '-' and "
            "'_' (up to 64)"
        )
    return raw


def query_budgets(variable: str, raw: str) -> dict[str, int]:
    """``name=rows,name=rows`` (read key names and scanned rows per day) as a mapping."""
    budgets: dict[str, int] = {}
    for pair in filter(None, (part.strip() for part in raw.split(","))):
        name, _, rows = pair.partition("=")
        name = name.strip()
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,63}", name) or not rows.strip().isdigit():
            raise SettingsError(
                f"{variable}: {pair!r} is not a read key's name and a number of rows; write "
                "name=rows pairs separated by commas, such as analyst=5000000,bi=200000000"
            )
        if name in budgets:
            raise SettingsError(f"{variable}: the read key {name!r} is given twice")
        budgets[name] = int(rows)
    return budgets


def _query_budgets(variable: str, raw: str) -> str:
    query_budgets(variable, raw)
    return raw


WAREHOUSE_ENGINES = ("duckdb", "spark")
# The dbt target (dbt_project/profiles.yml) of each warehouse engine.
DBT_TARGETS = {"duckdb": "dev", "spark": "spark"}
_SPARK_MEMORY = re.compile(r"^\d+[kmgt]$")


def _engine(variable: str, raw: str) -> str:
    value = raw.strip().lower()
    if value not in WAREHOUSE_ENGINES:
        raise SettingsError(
            f"{variable}={raw!r} is not a warehouse engine: use one of "
            + ", ".join(WAREHOUSE_ENGINES)
        )
    return value


def _spark_memory(variable: str, raw: str) -> str:
    value = raw.strip().lower()
    if not _SPARK_MEMORY.match(value):
        raise SettingsError(f"{variable}={raw!r} is not a JVM memory size: use e.g. 512m or 2g")
    return value


def _postgres_url(variable: str, raw: str) -> str:
    parts = urllib.parse.urlsplit(raw)
    if (
        parts.scheme not in ("postgresql", "postgres", "postgresql+psycopg2")
        or not parts.hostname
        or not parts.path.strip("/")
    ):
        # The value may hold a password: name the setting, not the value.
        raise SettingsError(
            f"{variable} must be a postgresql:// URL with a host and a database, such as "
            "postgresql://dagster@db.internal:5432/dagster"
        )
    return raw


@dataclass(frozen=True)
class Setting:
    """How one field of ``Settings`` is read from the environment and shown in the README."""

    variable: str
    description: str
    # Whole numbers below this are refused.
    minimum: int | None = None
    # Checks a text value and returns it, or raises SettingsError naming the variable.
    check: Callable[[str, str], str] | None = None
    # What the README says a value may be, where the type alone does not say it.
    values: str | None = None
    # What the README says the default is, for the settings whose default is derived.
    shown_default: str | None = None


def setting(
    variable: str,
    default: T,
    description: str,
    *,
    minimum: int | None = None,
    check: Callable[[str, str], str] | None = None,
    values: str | None = None,
) -> T:
    """Declare a field of ``Settings``: its environment variable, default and bounds."""
    declared = Setting(variable, description, minimum, check, values)
    return dataclasses.field(default=default, metadata={"setting": declared})


def derived_setting(variable: str, description: str, *, values: str, shown_default: str) -> Any:
    """Declare a field of ``Settings`` whose default ``load_settings`` derives (no default in
    the dataclass: whoever builds a ``Settings`` by hand gives it)."""
    declared = Setting(variable, description, values=values, shown_default=shown_default)
    return dataclasses.field(metadata={"setting": declared})


@dataclass(frozen=True)
class Settings:
    # derived_setting() makes a field without a default, not a shared default (RUF009's worry).
    data_dir: Path = derived_setting(  # noqa: RUF009
        "SLUICE_DATA_DIR",
        "the one folder holding all state: `landing/`, `warehouse/sluice.duckdb`, "
        "`serving/sluice.duckdb`, `reports/`, `dlt/`, `dbt/target/` (dbt's manifest and recent "
        "runs), `dagster/` (the Dagster home), `realtime/` (`sluice stream`'s windows and "
        "alert state); with the Spark engine also `lake/` (raw Parquet) and `spark/` (the "
        "cluster's metastore, tables and logs)",
        values="a folder without a quote (`'`) in its path",
        shown_default=f"`{DEFAULT_DATA_DIR}`",
    )
    start_date: dt.date = derived_setting(  # noqa: RUF009
        "SLUICE_START_DATE",
        "first daily partition",
        values="`YYYY-MM-DD`",
        shown_default=(
            "the first day `sluice generate` wrote (`<data dir>/start_date`), "
            f"else {START_DATE_FALLBACK_DAYS} days ago"
        ),
    )
    late_lookback_days: int = setting(
        "SLUICE_LATE_LOOKBACK_DAYS",
        7,
        "how many days back a load of late events may trigger rebuilds of built partitions",
        minimum=0,
    )
    # Retention (orchestration/maintain/): whole days past each layer's horizon are dropped by
    # the daily `retention` job. A layer that drops days must keep more of them than the
    # late-event lookback (a late event rebuilds its day), which the job checks.
    retention_landing_days: int = setting(
        "SLUICE_RETENTION_LANDING_DAYS",
        400,
        "the `retention` job deletes a landing file this many days after a load took it (never "
        "a file no load has taken); 0 keeps every file",
        minimum=0,
    )
    retention_raw_days: int = setting(
        "SLUICE_RETENTION_RAW_DAYS",
        400,
        "the `retention` job drops the days older than this from `raw.events` (by event day) and "
        "`raw.rejected_events` (by the day the line was rejected); 0 keeps every day",
        minimum=0,
    )
    retention_core_days: int = setting(
        "SLUICE_RETENTION_CORE_DAYS",
        400,
        "the `retention` job drops the days older than this from `core.fct_events`, and the weeks "
        "that ended before them from `core.user_active_weeks` (each user's first active week "
        "stays, for `retention_weekly`); 0 keeps every day",
        minimum=0,
    )
    retention_marts_days: int = setting(
        "SLUICE_RETENTION_MARTS_DAYS",
        0,
        "the `retention` job drops the days older than this from the marts (and so from the "
        "next serving snapshot); 0 keeps every day",
        minimum=0,
    )
    # Past the limit DuckDB spills sorts, joins and the window's temporary tables to
    # <warehouse>.tmp instead of growing, so a build of a big day stays within it (plus about
    # 200 MB of dbt itself) at the cost of time. 1GB builds a 30-day window of 10M events a day
    # on two threads; 150MB kept a 1M-event day under 0.4 GB but ran out of memory
    # deduplicating that window.
    duckdb_memory_limit: str = setting(
        "SLUICE_DUCKDB_MEMORY_LIMIT",
        DEFAULT_DUCKDB_MEMORY_LIMIT,
        "DuckDB's `memory_limit` in dbt builds; past it, DuckDB spills to disk beside the "
        "warehouse",
        check=_memory_limit,
        values="a size (`150MB`, `4GB`, `2GiB`) or a share of the machine's memory (`25%`)",
    )
    # At 150MB, two threads ran out of memory deduplicating a year of events where one did not.
    duckdb_threads: int = setting(
        "SLUICE_DUCKDB_THREADS",
        DEFAULT_DUCKDB_THREADS,
        "DuckDB's threads in dbt builds (each needs buffers of its own within the memory limit)",
        minimum=1,
    )
    dagster_port: int = setting(
        "SLUICE_DAGSTER_PORT", 3000, "port of the Dagster UI started by `make dev`", minimum=1
    )
    api_host: str = setting(
        "SLUICE_API_HOST", "127.0.0.1", "address `sluice serve` listens on (`--host` overrides)"
    )
    api_port: int = setting(
        "SLUICE_API_PORT", 8000, "port `sluice serve` listens on (`--port` overrides)", minimum=1
    )
    api_rate: int = setting(
        "SLUICE_API_RATE",
        20_000,
        "messages per second each write key may send, sustained (token bucket refill rate)",
        minimum=1,
    )
    api_burst: int = setting(
        "SLUICE_API_BURST",
        50_000,
        "messages a write key may send at once above the rate (token bucket size; at least "
        "one full batch)",
        minimum=2500,
    )
    api_segment_bytes: int = setting(
        "SLUICE_API_SEGMENT_BYTES",
        64 << 20,
        "the ingest API closes a landing segment (so the load picks it up) at this size",
        minimum=1024,
    )
    api_segment_seconds: int = setting(
        "SLUICE_API_SEGMENT_SECONDS",
        60,
        "... or once it has been open this many seconds",
        minimum=1,
    )
    smtp_host: str = setting(
        "SLUICE_SMTP_HOST",
        "",
        "SMTP relay that mails the scheduled reports (and `sluice report run --email`); plain "
        "SMTP, no login. Unset: reports are only written to files",
    )
    smtp_port: int = setting("SLUICE_SMTP_PORT", 25, "port of the SMTP relay", minimum=1)
    report_email_to: tuple[str, ...] = setting(
        "SLUICE_REPORT_EMAIL_TO",
        (),
        "recipients of the reports",
        values="comma-separated addresses",
    )
    report_email_from: str = setting(
        "SLUICE_REPORT_EMAIL_FROM", "sluice@localhost", "sender of the reports"
    )
    report_webhook_url: str = setting(
        "SLUICE_REPORT_WEBHOOK_URL",
        "",
        "where the scheduled reports (and `sluice report run --webhook`) are posted as "
        "Slack-compatible JSON (a Slack incoming webhook or the like)",
        check=_url,
        values="an `http://` or `https://` URL",
    )
    query_max_rows: int = setting(
        "SLUICE_QUERY_MAX_ROWS",
        10_000,
        "most rows in one answer of the query API (the rest is cut, and the answer says so)",
        minimum=1,
    )
    query_timeout_seconds: int = setting(
        "SLUICE_QUERY_TIMEOUT_SECONDS",
        5,
        "a query or report running longer is stopped (408)",
        minimum=1,
    )
    query_max_scan_rows: int = setting(
        "SLUICE_QUERY_MAX_SCAN_ROWS",
        50_000_000,
        "a query whose plan DuckDB estimates to read or produce more rows at any step is "
        "refused before it runs (413)",
        minimum=1,
    )
    query_per_minute: int = setting(
        "SLUICE_QUERY_PER_MINUTE",
        120,
        "requests each read key may make per minute (429)",
        minimum=1,
    )
    query_scan_rows_per_day: int = setting(
        "SLUICE_QUERY_SCAN_ROWS_PER_DAY",
        1_000_000_000,
        "rows each read key's queries may scan per UTC day (429)",
        minimum=1,
    )

    realtime_lateness_seconds: int = setting(
        "SLUICE_REALTIME_LATENESS_SECONDS",
        300,
        "`sluice stream` adds an event to its minute windows only if its time is at most this "
        "much older than the newest event seen; older ones are counted as late and left to the "
        "batch tier",
        minimum=0,
    )
    realtime_retention_days: int = setting(
        "SLUICE_REALTIME_RETENTION_DAYS",
        7,
        "`sluice stream` deletes minute windows this many days older than the newest event",
        minimum=1,
    )
    stream_nats_url: str = setting(
        "SLUICE_STREAM_NATS_URL",
        "",
        "NATS JetStream mode of the real-time tier: `sluice serve` also publishes each message "
        "it acknowledges to a JetStream stream there, and `sluice stream` consumes it. Unset: "
        "tail mode (the worker reads the landing segments)",
        check=_nats_urls,
        values="`nats://host:port` URLs, comma-separated",
    )
    stream_nats_stream: str = setting(
        "SLUICE_STREAM_NATS_STREAM",
        "sluice_events",
        "the JetStream stream (subjects `<stream>.<source>`) of NATS mode",
        check=_nats_name,
        values="letters, digits, `-`, `_`",
    )
    stream_nats_consumer: str = setting(
        "SLUICE_STREAM_NATS_CONSUMER",
        "sluice-stream",
        "the durable consumer that `sluice stream` workers share in NATS mode (they split the "
        "messages); workers with a real-time store of their own need a consumer of their own",
        check=_nats_name,
        values="letters, digits, `-`, `_`",
    )
    stream_nats_max_age_hours: int = setting(
        "SLUICE_STREAM_NATS_MAX_AGE_HOURS",
        24,
        "the stream keeps each message this long (on file storage), consumed or not",
        minimum=1,
    )
    alert_interval_seconds: int = setting(
        "SLUICE_ALERT_INTERVAL_SECONDS",
        15,
        "`sluice stream` evaluates the alert rules (`reports/alerts/*.yml`) this often",
        minimum=1,
    )
    platform_alert_cooldown_minutes: int = setting(
        "SLUICE_PLATFORM_ALERT_COOLDOWN_MINUTES",
        30,
        "after an alert of the platform (a failed run, an ERROR check that failed, a stale "
        "asset, a query budget overrun) resolves, the same alert raised again this soon is "
        "recorded but not sent until it is raised after the cool-down",
        minimum=0,
    )
    query_budget_scan_rows_per_day: int = setting(
        "SLUICE_QUERY_BUDGET_SCAN_ROWS_PER_DAY",
        800_000_000,
        "each read key's budget of rows scanned per UTC day, a soft limit below the quota "
        "`SLUICE_QUERY_SCAN_ROWS_PER_DAY`: the query that overruns it is answered and raises "
        "the alert `query_budget_<key>` once that day",
        minimum=1,
    )
    query_budgets: str = setting(
        "SLUICE_QUERY_BUDGETS",
        "",
        "budgets of rows scanned per UTC day for named read keys, in place of "
        "`SLUICE_QUERY_BUDGET_SCAN_ROWS_PER_DAY`",
        check=_query_budgets,
        values="`name=rows` pairs, comma-separated",
    )
    dagster_postgres_url: str = setting(
        "SLUICE_DAGSTER_POSTGRES_URL",
        "",
        "a team instance: Dagster keeps its runs, event logs, schedules and sensor ticks in "
        "this PostgreSQL database (written, with its password, into the data directory's "
        "`dagster/dagster.yaml`, readable by its owner only; leave the password out to let "
        "libpq read `PGPASSWORD` or `~/.pgpass`). Unset: SQLite files in `dagster/`",
        check=_postgres_url,
        values="`postgresql://user[:password]@host[:port]/database`",
    )
    dagster_run_retries: int = setting(
        "SLUICE_DAGSTER_RUN_RETRIES",
        1,
        "the Dagster daemon re-executes a failed run from its failed step up to this many "
        "times (0: never); a run's tag `dagster/max_retries` overrides it",
        minimum=0,
    )
    dagster_max_runtime_seconds: int = setting(
        "SLUICE_DAGSTER_MAX_RUNTIME_SECONDS",
        6 * 3600,
        "the Dagster daemon fails a run still going after this many seconds, which frees its "
        "warehouse slot: the one way a run whose process died gives it back (0: no limit); a "
        "run's tag `dagster/max_runtime` overrides it",
        minimum=0,
    )

    # The warehouse engine (docs/scale-out.md): DuckDB on one machine, or a Spark cluster
    # (`sluice spark up`) for a team whose events outgrow one machine.
    warehouse_engine: str = setting(
        "SLUICE_WAREHOUSE_ENGINE",
        "duckdb",
        "where dlt lands raw events and dbt builds the facts and marts: `duckdb` (the file "
        "`warehouse/sluice.duckdb`) or `spark` (Parquet in `lake/`, built by the Spark "
        "cluster of `sluice spark up` through its Thrift server)",
        check=_engine,
        values="`duckdb` or `spark`",
    )
    spark_master_port: int = setting(
        "SLUICE_SPARK_MASTER_PORT",
        7077,
        "port of the standalone Spark master that `sluice spark up` starts on 127.0.0.1",
        minimum=1,
    )
    spark_ui_port: int = setting(
        "SLUICE_SPARK_UI_PORT",
        8090,
        "port of the Spark master's web UI (the workers' and the Thrift server's UIs take "
        "free ports)",
        minimum=1,
    )
    spark_thrift_port: int = setting(
        "SLUICE_SPARK_THRIFT_PORT",
        10000,
        "port of the Spark Thrift server (HiveServer2 protocol) that dbt connects to",
        minimum=1,
    )
    spark_workers: int = setting(
        "SLUICE_SPARK_WORKERS",
        2,
        "how many Spark workers `sluice spark up` starts on this machine",
        minimum=1,
    )
    spark_worker_cores: int = setting(
        "SLUICE_SPARK_WORKER_CORES",
        1,
        "cores each Spark worker offers to the cluster",
        minimum=1,
    )
    spark_worker_memory: str = setting(
        "SLUICE_SPARK_WORKER_MEMORY",
        "1g",
        "memory each Spark worker offers to its executor",
        check=_spark_memory,
        values="a JVM size such as `512m` or `2g`",
    )
    spark_driver_memory: str = setting(
        "SLUICE_SPARK_DRIVER_MEMORY",
        "1g",
        "heap of the Thrift server, the Spark driver that plans every dbt statement",
        check=_spark_memory,
        values="a JVM size such as `512m` or `2g`",
    )

    @property
    def dbt_target(self) -> str:
        """The dbt target of the warehouse engine (dbt_project/profiles.yml)."""
        return DBT_TARGETS[self.warehouse_engine]

    @property
    def lake_dir(self) -> Path:
        """Spark engine: dlt's filesystem destination; raw tables are Parquet under it."""
        return self.data_dir / "lake"

    @property
    def spark_dir(self) -> Path:
        """Spark engine: the cluster's metastore, warehouse (facts and marts), logs and pids."""
        return self.data_dir / "spark"

    @property
    def spark_warehouse_dir(self) -> Path:
        """Spark engine: where Spark keeps the tables dbt builds (one folder per schema)."""
        return self.spark_dir / "warehouse"

    @property
    def landing_dir(self) -> Path:
        return self.data_dir / "landing"

    @property
    def api_sources_dir(self) -> Path:
        """Where the ingest API writes its segments, one folder per write key's source."""
        return self.landing_dir / "sources"

    @property
    def api_keys_path(self) -> Path:
        """Hashes of the ingest API's write keys (``sluice keys``)."""
        return self.data_dir / "keys.json"

    @property
    def query_quotas_path(self) -> Path:
        """The query API's per-key counts (requests per minute, rows scanned per day), SQLite."""
        return self.data_dir / "query_quotas.sqlite"

    @property
    def realtime_store_path(self) -> Path:
        """``sluice stream``'s minute windows, offsets and counters (SQLite in WAL mode)."""
        return self.data_dir / "realtime" / "windows.sqlite"

    @property
    def alerts_state_path(self) -> Path:
        """Each alert rule's state (pending, firing, notified, resolved) and the messages
        still to deliver, SQLite; written by the alert engine of ``sluice stream``."""
        return self.data_dir / "realtime" / "alerts.sqlite"

    @property
    def alerts_path(self) -> Path:
        """The platform's alerts (failed runs and checks, stale assets, query budgets): their
        state and the messages still to deliver, SQLite; written by the Dagster daemon's alert
        sensor and by ``sluice serve``."""
        return self.data_dir / "alerts.sqlite"

    def query_budget(self, reader: str) -> int:
        """The read key's budget of rows scanned per UTC day."""
        budgets = query_budgets("SLUICE_QUERY_BUDGETS", self.query_budgets)
        return budgets.get(reader, self.query_budget_scan_rows_per_day)

    @property
    def slo_counts_path(self) -> Path:
        """Per-minute counts of the ingest and query APIs' SLIs (SQLite), written by
        ``sluice serve`` and read by ``sluice slo`` and ``/metrics``."""
        return self.data_dir / "slo.sqlite"

    @property
    def warehouse_path(self) -> Path:
        return self.data_dir / "warehouse" / "sluice.duckdb"

    @property
    def retention_record_path(self) -> Path:
        """The days before which the ``retention`` job dropped each layer (JSON), read by the
        Dagster definitions without opening the warehouse; the warehouse's own record is
        ``sluice_meta.retention_horizons``."""
        return self.data_dir / "warehouse" / "retention.json"

    @property
    def serving_path(self) -> Path:
        """The copy of the marts that BI tools and reports read (never the warehouse)."""
        return self.data_dir / "serving" / "sluice.duckdb"

    @property
    def serving_parquet_dir(self) -> Path:
        """The marts as Parquet files, one folder per version and a ``current`` symlink."""
        return self.data_dir / "serving" / "parquet"

    @property
    def reports_output_dir(self) -> Path:
        """Where ``sluice report run`` and the report schedule write: <report>/<day>.<format>."""
        return self.data_dir / "reports"

    @property
    def dlt_dir(self) -> Path:
        return self.data_dir / "dlt"

    @property
    def dbt_target_dir(self) -> Path:
        """dbt's target folder for this data directory: the manifest that the Dagster assets
        are built from, the partial-parse file every run starts from, and one folder per run.

        It is per data directory because dbt's partial parse is only valid for the profile
        (warehouse path, memory limit) it was parsed with.
        """
        return self.data_dir / "dbt" / "target"

    @property
    def dagster_home(self) -> Path:
        return self.data_dir / "dagster"

    @property
    def run_log_path(self) -> Path:
        """Where runs started by the CLI write dbt's and dlt's console output."""
        return self.data_dir / "logs" / "runs.log"

    def subprocess_env(self) -> dict[str, str]:
        """Variables that dbt and Dagster child processes need to find this data directory."""
        return {
            "SLUICE_DATA_DIR": str(self.data_dir),
            "SLUICE_START_DATE": self.start_date.isoformat(),
            "SLUICE_WAREHOUSE_PATH": str(self.warehouse_path),
            "SLUICE_WAREHOUSE_ENGINE": self.warehouse_engine,
            "SLUICE_LAKE_DIR": str(self.lake_dir),
            "SLUICE_SPARK_THRIFT_PORT": str(self.spark_thrift_port),
            "SLUICE_DUCKDB_MEMORY_LIMIT": self.duckdb_memory_limit,
            "SLUICE_DUCKDB_THREADS": str(self.duckdb_threads),
            "DBT_TARGET_PATH": str(self.dbt_target_dir),
            "DAGSTER_HOME": str(self.dagster_home),
            # Dagster hands the per-day asset events of a run to the event log in batches of
            # this many (orchestration/event_log.py writes a batch in one transaction).
            "DAGSTER_EVENT_BATCH_SIZE": str(DAGSTER_EVENT_BATCH_SIZE),
        }


def declared_settings() -> list[tuple[dataclasses.Field[Any], Setting]]:
    """Every field of ``Settings`` with its declaration, in the order they are declared."""
    return [(field, field.metadata["setting"]) for field in dataclasses.fields(Settings)]


def _whole_number(variable: str, raw: str, minimum: int | None) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{variable}={raw!r} is not a whole number") from None
    if minimum is not None and value < minimum:
        raise SettingsError(f"{variable}={value} must be at least {minimum}")
    return value


def _read(field: dataclasses.Field[Any], declared: Setting, raw: str) -> Any:
    """The value of a declared setting whose variable is set (not empty)."""
    if isinstance(field.default, bool):
        raise TypeError(f"{declared.variable}: no reader for a bool setting yet")
    if isinstance(field.default, int):
        return _whole_number(declared.variable, raw, declared.minimum)
    if isinstance(field.default, tuple):
        return tuple(item.strip() for item in raw.split(",") if item.strip())
    return declared.check(declared.variable, raw) if declared.check else raw


def _data_dir(env: Mapping[str, str]) -> Path:
    data_dir = Path(env.get("SLUICE_DATA_DIR") or DEFAULT_DATA_DIR).expanduser().resolve()
    if "'" in str(data_dir):
        # DuckDB's file functions take paths inside SQL string literals (dlt's loader too).
        raise SettingsError(
            f"SLUICE_DATA_DIR={str(data_dir)!r} holds a quote ('), which the loader's SQL "
            "cannot take in a file path; choose a folder without one"
        )
    return data_dir


def _start_date(env: Mapping[str, str], data_dir: Path) -> dt.date:
    raw = env.get("SLUICE_START_DATE")
    recorded = data_dir / START_DATE_FILE
    if raw:
        return parse_date(raw, "SLUICE_START_DATE")
    if recorded.exists():
        return parse_date(recorded.read_text(), f"{recorded} (recorded start date)")
    return dt.date.today() - dt.timedelta(days=START_DATE_FALLBACK_DAYS)


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    data_dir = _data_dir(env)
    values: dict[str, Any] = {"data_dir": data_dir, "start_date": _start_date(env, data_dir)}
    for field, declared in declared_settings():
        if field.name in values:
            continue
        raw = (env.get(declared.variable) or "").strip()
        values[field.name] = _read(field, declared, raw) if raw else field.default
    return Settings(**values)


def record_start_date(settings: Settings, first_day: dt.date) -> None:
    """Remember the first day of data so the partitions start there (unless set explicitly)."""
    path = settings.data_dir / START_DATE_FILE
    if path.exists():
        recorded = parse_date(path.read_text(), str(path))
        if recorded <= first_day:
            return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(first_day.isoformat() + "\n")


def _shown_default(field: dataclasses.Field[Any], declared: Setting) -> str:
    if declared.shown_default is not None:
        return declared.shown_default
    return f"`{field.default}`" if field.default not in ("", ()) else "none"


def _shown_values(field: dataclasses.Field[Any], declared: Setting) -> str:
    if declared.values is not None:
        return declared.values
    if isinstance(field.default, int):
        return f"a whole number, at least {declared.minimum}"
    return "text"


def markdown_table() -> str:
    """The README's settings table: one row per declared setting."""
    rows = [
        "| variable | default | values | meaning |",
        "|---|---|---|---|",
    ]
    for field, declared in declared_settings():
        cells = (
            f"`{declared.variable}`",
            _shown_default(field, declared),
            _shown_values(field, declared),
            declared.description,
        )
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m common.settings", description="Sluice's settings, as declared."
    )
    parser.add_argument("--markdown", action="store_true", help="print the README's settings table")
    args = parser.parse_args(argv)
    if args.markdown:
        sys.stdout.write(markdown_table())
    else:
        for name, value in dataclasses.asdict(load_settings()).items():
            print(f"{name} = {value}")


if __name__ == "__main__":
    main()
