"""Per-key quotas of the query API: queries per minute and rows scanned per UTC day.

Keyed by the read key's name and kept in a small SQLite file in the data directory
(``Settings.query_quotas_path``; never the DuckDB files, which have one writer each), so a
restart of the server forgets neither: a key that spent its day's rows stays refused until
the next UTC day. SQLite in WAL mode without a sync per write: a request costs a few tens of
microseconds, and a power cut may lose the last moments' counts, which a quota can afford.
Each key's rows per day are kept for ``KEEP_DAYS`` days, for whoever wants to look.

The clock is injected for tests. Reads no environment: the limits and the file come from
``Settings``.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from serving.sql_guard import QueryRefused

KEEP_DAYS = 31
WINDOW_SECONDS = 60

SCHEMA = """
create table if not exists requests (
    reader text not null,
    at real not null  -- seconds since the epoch (UTC)
);
create index if not exists requests_by_reader on requests (reader, at);
create index if not exists requests_by_time on requests (at);
create table if not exists rows_scanned (
    reader text not null,
    day text not null,  -- UTC, YYYY-MM-DD
    rows integer not null,
    primary key (reader, day)
) without rowid;
"""


class QuotaStoreError(RuntimeError):
    """The quota file cannot be opened; the message names it."""


class KeyQuotas:
    def __init__(
        self,
        per_minute: int,
        scan_rows_per_day: int,
        path: Path,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.per_minute = per_minute
        self.scan_rows_per_day = scan_rows_per_day
        self.path = path
        self.clock = clock
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # One connection, used under the lock from whichever thread serves the request.
            self._db = sqlite3.connect(path, check_same_thread=False, timeout=5)
            self._db.execute("pragma journal_mode = wal")
            self._db.execute("pragma synchronous = normal")
            with self._db:
                self._db.executescript(SCHEMA)
                oldest = self._today() - dt.timedelta(days=KEEP_DAYS)
                self._db.execute("delete from rows_scanned where day < ?", (oldest.isoformat(),))
        except (OSError, sqlite3.Error) as error:
            raise QuotaStoreError(
                f"cannot open the query quota file {path}: {error}; it lives in "
                "SLUICE_DATA_DIR, which must be writable"
            ) from None

    def _today(self) -> dt.date:
        return dt.datetime.fromtimestamp(self.clock(), dt.UTC).date()

    def admit(self, name: str) -> None:
        """Count one request of ``name``; refuse when it is over either quota."""
        now = self.clock()
        today = self._today().isoformat()
        with self._lock, self._db:
            self._db.execute("delete from requests where at <= ?", (now - WINDOW_SECONDS,))
            count, oldest = self._db.execute(
                "select count(*), min(at) from requests where reader = ?", (name,)
            ).fetchone()
            if count < self.per_minute:
                self._db.execute("insert into requests values (?, ?)", (name, now))
            row = self._db.execute(
                "select rows from rows_scanned where reader = ? and day = ?", (name, today)
            ).fetchone()
        if count >= self.per_minute:
            wait = int(oldest + WINDOW_SECONDS - now) + 1
            raise QueryRefused(
                "queries_per_minute",
                429,
                f"read key {name!r} sent {self.per_minute} queries in the last minute "
                f"(SLUICE_QUERY_PER_MINUTE); retry in {wait} s",
            )
        used = row[0] if row else 0
        if used >= self.scan_rows_per_day:
            raise QueryRefused(
                "rows_scanned_per_day",
                429,
                f"read key {name!r} scanned {used:,} rows today; the limit is "
                f"{self.scan_rows_per_day:,} per UTC day (SLUICE_QUERY_SCAN_ROWS_PER_DAY)",
            )

    def charge(self, name: str, rows: int) -> int:
        """Add the rows a query of ``name`` scanned to today's total; the new total."""
        today = self._today().isoformat()
        with self._lock, self._db:
            row = self._db.execute(
                "insert into rows_scanned values (?, ?, ?) "
                "on conflict (reader, day) do update set rows = rows + excluded.rows "
                "returning rows",
                (name, today, rows),
            ).fetchone()
        return int(row[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
