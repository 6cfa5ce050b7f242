"""Every Sluice setting, defined once and read from the environment.

Environment variables (all optional; the defaults work on a laptop):

- ``SLUICE_DATA_DIR``: the one folder that holds all state (landing files, the warehouse,
  dlt state, the Dagster home). Default: ``data`` under the current directory. Two data
  directories never share anything, so tests and users can run side by side.
- ``SLUICE_START_DATE``: first daily partition (``YYYY-MM-DD``). When unset, the date that
  ``sluice generate`` recorded in ``<data dir>/start_date`` is used, else 30 days ago.
- ``SLUICE_LATE_LOOKBACK_DAYS``: how many days back a load may trigger rebuilds of already
  built partitions when late events arrive. Default: 7.
- ``SLUICE_DBT_TARGET``: the dbt target to build. Default: ``dev``.
- ``SLUICE_DUCKDB_MEMORY_LIMIT``: DuckDB's ``memory_limit`` in dbt builds (``150MB``,
  ``4GB``, ``25%`` of the machine's memory). Past it, DuckDB spills sorts, joins and the
  window's temporary tables to ``<warehouse>.tmp`` beside the warehouse instead of growing,
  so a build of a big day stays within it (plus about 200 MB of dbt itself) at the cost of
  time. Default: ``1GB``: a 30-day window of 10M events a day builds within it on two
  threads (``150MB`` kept a 1M-event day under 0.4 GB but ran out of memory deduplicating
  that window). ``dbt_project/profiles.yml`` falls back to the same default for an analyst
  running dbt by hand.
- ``SLUICE_DUCKDB_THREADS``: DuckDB's threads in dbt builds. Each thread holds buffers of its
  own inside the memory limit (at 150MB, two threads ran out of memory deduplicating a year
  of events where one did not). Default: 2.
- ``SLUICE_DAGSTER_PORT``: port of the Dagster UI started by ``make dev``. Default: 3000.
- ``SLUICE_API_HOST``: address ``sluice serve`` (the ingest API) listens on. Default:
  ``127.0.0.1``.
- ``SLUICE_API_PORT``: port of the ingest API. Default: 8000.
- ``SLUICE_API_RATE``: messages per second each write key may send, sustained (token
  bucket refill rate). Default: 20000.
- ``SLUICE_API_BURST``: messages a write key may send at once above the rate (bucket size;
  at least 2500, one full batch). Default: 50000.
- ``SLUICE_API_SEGMENT_BYTES``: the ingest API closes a landing segment (so the loader
  picks it up) once it holds this many bytes. Default: 67108864 (64 MiB).
- ``SLUICE_API_SEGMENT_SECONDS``: ... or once it has been open this many seconds.
  Default: 60.
- ``SLUICE_SMTP_HOST``, ``SLUICE_SMTP_PORT``: an SMTP relay that scheduled reports (and
  ``sluice report run --email``) are mailed through; plain SMTP, no login. Default: none, so
  reports are only written to files; port 25.
- ``SLUICE_REPORT_EMAIL_TO``: comma-separated recipients of the reports. Default: none.
- ``SLUICE_REPORT_EMAIL_FROM``: the sender. Default: ``sluice@localhost``.
- ``SLUICE_REPORT_WEBHOOK_URL``: an ``http(s)://`` URL that scheduled reports (and
  ``sluice report run --webhook``) are posted to as Slack-compatible JSON (a Slack incoming
  webhook, or any chat that takes the same). Default: none.
- ``SLUICE_QUERY_MAX_ROWS``: most rows one ``POST /v1/query`` answer holds (the rest is cut,
  and the answer says so). Default: 10000.
- ``SLUICE_QUERY_TIMEOUT_SECONDS``: a query or report still running after this is stopped.
  Default: 5.
- ``SLUICE_QUERY_MAX_SCAN_ROWS``: a query whose plan DuckDB estimates to read or produce more
  rows than this at any step is refused before it runs. Default: 50000000.
- ``SLUICE_QUERY_PER_MINUTE``: requests each read key may make per minute. Default: 120.
- ``SLUICE_QUERY_SCAN_ROWS_PER_DAY``: rows each read key's queries may scan per UTC day.
  Default: 1000000000.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import sys
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

REPO_DIR = Path(__file__).resolve().parent.parent
DBT_PROJECT_DIR = REPO_DIR / "dbt_project"
DAGSTER_YAML_TEMPLATE = REPO_DIR / "orchestration" / "dagster.yaml"
SAMPLE_DIR = REPO_DIR / "data" / "sample"
# Saved reports (YAML); see serving/reports.py.
REPORTS_DIR = REPO_DIR / "reports"


def dbt_executable() -> str:
    """The dbt installed beside this Python (the project's venv), else the one on PATH."""
    beside = Path(sys.executable).with_name("dbt")
    return str(beside) if beside.exists() else shutil.which("dbt") or "dbt"


# Table names shared by the loader, the dbt sources and the orchestration.
RAW_SCHEMA = "raw"
RAW_EVENTS_TABLE = "events"
RAW_REJECTED_TABLE = "rejected_events"
MARTS_SCHEMA = "marts"

# The dagster pool that every asset opening the warehouse joins; its limit is 1.
WAREHOUSE_POOL = "duckdb_warehouse"

START_DATE_FILE = "start_date"

# Per-day asset events per event-log write: a year of days for one asset.
DAGSTER_EVENT_BATCH_SIZE = 400

DEFAULT_DUCKDB_MEMORY_LIMIT = "1GB"
DEFAULT_DUCKDB_THREADS = 2
_MEMORY_LIMIT = re.compile(r"^\d+(\.\d+)?\s*([KMGT]i?B|%)$", re.IGNORECASE)


class SettingsError(ValueError):
    """A setting has a value Sluice cannot use; the message names the setting."""


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    start_date: dt.date
    late_lookback_days: int = 7
    dbt_target: str = "dev"
    duckdb_memory_limit: str = DEFAULT_DUCKDB_MEMORY_LIMIT
    duckdb_threads: int = DEFAULT_DUCKDB_THREADS
    dagster_port: int = 3000
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_rate: int = 20_000
    api_burst: int = 50_000
    api_segment_bytes: int = 64 << 20
    api_segment_seconds: int = 60
    smtp_host: str = ""
    smtp_port: int = 25
    report_email_to: tuple[str, ...] = ()
    report_email_from: str = "sluice@localhost"
    report_webhook_url: str = ""
    query_max_rows: int = 10_000
    query_timeout_seconds: int = 5
    query_max_scan_rows: int = 50_000_000
    query_per_minute: int = 120
    query_scan_rows_per_day: int = 1_000_000_000

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
    def warehouse_path(self) -> Path:
        return self.data_dir / "warehouse" / "sluice.duckdb"

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
            "SLUICE_DUCKDB_MEMORY_LIMIT": self.duckdb_memory_limit,
            "SLUICE_DUCKDB_THREADS": str(self.duckdb_threads),
            "DBT_TARGET_PATH": str(self.dbt_target_dir),
            "DAGSTER_HOME": str(self.dagster_home),
            # Dagster hands the per-day asset events of a run to the event log in batches of
            # this many (orchestration/event_log.py writes a batch in one transaction).
            "DAGSTER_EVENT_BATCH_SIZE": str(DAGSTER_EVENT_BATCH_SIZE),
        }


def parse_date(value: str, setting: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value.strip())
    except ValueError:
        raise SettingsError(f"{setting}={value!r} is not a date; use YYYY-MM-DD") from None


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a whole number") from None
    if value < minimum:
        raise SettingsError(f"{name}={value} must be at least {minimum}")
    return value


def _memory_limit(env: Mapping[str, str], name: str, default: str) -> str:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    if not _MEMORY_LIMIT.match(raw):
        raise SettingsError(
            f"{name}={raw!r} is not an amount of memory; use a size such as 150MB, 4GB or 2GiB, "
            "or a share of the machine's memory such as 25%"
        )
    return raw


def _url(env: Mapping[str, str], name: str) -> str:
    raw = (env.get(name) or "").strip()
    if not raw:
        return ""
    parts = urllib.parse.urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        # The value may hold a secret (a webhook's path): name the setting, not the value.
        raise SettingsError(f"{name} must be an http:// or https:// URL with a host")
    return raw


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    data_dir = Path(env.get("SLUICE_DATA_DIR") or "data").expanduser().resolve()
    if "'" in str(data_dir):
        # DuckDB's file functions take paths inside SQL string literals (dlt's loader too).
        raise SettingsError(
            f"SLUICE_DATA_DIR={str(data_dir)!r} holds a quote ('), which the loader's SQL "
            "cannot take in a file path; choose a folder without one"
        )
    raw_start = env.get("SLUICE_START_DATE")
    recorded = data_dir / START_DATE_FILE
    if raw_start:
        start = parse_date(raw_start, "SLUICE_START_DATE")
    elif recorded.exists():
        start = parse_date(recorded.read_text(), f"{recorded} (recorded start date)")
    else:
        start = dt.date.today() - dt.timedelta(days=30)
    return Settings(
        data_dir=data_dir,
        start_date=start,
        late_lookback_days=_int(env, "SLUICE_LATE_LOOKBACK_DAYS", 7),
        dbt_target=env.get("SLUICE_DBT_TARGET") or "dev",
        duckdb_memory_limit=_memory_limit(
            env, "SLUICE_DUCKDB_MEMORY_LIMIT", DEFAULT_DUCKDB_MEMORY_LIMIT
        ),
        duckdb_threads=_int(env, "SLUICE_DUCKDB_THREADS", DEFAULT_DUCKDB_THREADS, minimum=1),
        dagster_port=_int(env, "SLUICE_DAGSTER_PORT", 3000, minimum=1),
        api_host=env.get("SLUICE_API_HOST") or "127.0.0.1",
        api_port=_int(env, "SLUICE_API_PORT", 8000, minimum=1),
        api_rate=_int(env, "SLUICE_API_RATE", 20_000, minimum=1),
        api_burst=_int(env, "SLUICE_API_BURST", 50_000, minimum=2500),
        api_segment_bytes=_int(env, "SLUICE_API_SEGMENT_BYTES", 64 << 20, minimum=1024),
        api_segment_seconds=_int(env, "SLUICE_API_SEGMENT_SECONDS", 60, minimum=1),
        smtp_host=env.get("SLUICE_SMTP_HOST") or "",
        smtp_port=_int(env, "SLUICE_SMTP_PORT", 25, minimum=1),
        report_email_to=tuple(
            address.strip()
            for address in (env.get("SLUICE_REPORT_EMAIL_TO") or "").split(",")
            if address.strip()
        ),
        report_email_from=env.get("SLUICE_REPORT_EMAIL_FROM") or "sluice@localhost",
        report_webhook_url=_url(env, "SLUICE_REPORT_WEBHOOK_URL"),
        query_max_rows=_int(env, "SLUICE_QUERY_MAX_ROWS", 10_000, minimum=1),
        query_timeout_seconds=_int(env, "SLUICE_QUERY_TIMEOUT_SECONDS", 5, minimum=1),
        query_max_scan_rows=_int(env, "SLUICE_QUERY_MAX_SCAN_ROWS", 50_000_000, minimum=1),
        query_per_minute=_int(env, "SLUICE_QUERY_PER_MINUTE", 120, minimum=1),
        query_scan_rows_per_day=_int(
            env, "SLUICE_QUERY_SCAN_ROWS_PER_DAY", 1_000_000_000, minimum=1
        ),
    )


def record_start_date(settings: Settings, first_day: dt.date) -> None:
    """Remember the first day of data so the partitions start there (unless set explicitly)."""
    path = settings.data_dir / START_DATE_FILE
    if path.exists():
        recorded = parse_date(path.read_text(), str(path))
        if recorded <= first_day:
            return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(first_day.isoformat() + "\n")
