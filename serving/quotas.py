"""Per-key quotas of the query API: queries per minute and rows scanned per UTC day.

Keyed by the read key's name and kept in a small SQLite file in the data directory
(``Settings.query_quotas_path``; never the DuckDB files, which have one writer each), so a
restart of the server forgets neither: a key that spent its day's rows stays refused until
the next UTC day. Each key's rows per day are kept for ``KEEP_DAYS`` days, for whoever wants
to look (``select * from rows_scanned`` with the ``sqlite3`` CLI).

The check runs on the event loop for every request, cache hits included, so it reads
memory only: per key, the requests the file held at the last sync (counted per second of the
last minute), the requests counted here since (their times), and the rows scanned today. One
thread writes behind it every ``SYNC_SECONDS``, in one transaction: it adds the requests and
rows counted here since, drops requests older than the window, and reads back every key's
requests per second of the last minute and rows scanned today. What it reads holds every
process's counts, so processes sharing the file share the limits as before, each seeing the
others' within ``SYNC_SECONDS``. A second of the file's requests leaves the window when its
last instant does: a key may be refused up to a second longer than an exact window would,
never admitted sooner. Opening the file reads it back and ``close`` writes what is left, so
a restart forgets nothing; a process killed outright loses at most its last
``SYNC_SECONDS`` of counts (SQLite in WAL mode without a sync per write: a power cut may
lose the last moments too), which a quota can afford.

The clock is injected for tests. Reads no environment: the limits and the file come from
``Settings``.
"""

from __future__ import annotations

import collections
import datetime as dt
import itertools
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from serving.sql_guard import QueryRefused

KEEP_DAYS = 31
WINDOW_SECONDS = 60
# How often the counts made here are written to the file and everyone's read back.
SYNC_SECONDS = 0.2

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
        # Guards the counts below; never held while the file is read or written.
        self._lock = threading.Lock()
        # Key -> [second, requests in it] of the last minute, as the file held at the last
        # sync (every process's).
        self._synced: dict[str, collections.deque[list[int]]] = {}
        # Key -> (time, number) of the requests counted here and not yet read back; numbered
        # so that a sync knows which it wrote.
        self._own: dict[str, collections.deque[tuple[float, int]]] = {}
        self._numbers = itertools.count(1)
        self._unwritten: list[tuple[str, float]] = []
        self._last_number = 0
        # (key, day) -> rows scanned: the file's total at the last sync, the rows being
        # written by a sync, the rows counted here since.
        self._scanned: dict[tuple[str, str], int] = {}
        self._writing_rows: dict[tuple[str, str], int] = {}
        self._unwritten_rows: dict[tuple[str, str], int] = {}
        self._stop = threading.Event()
        # One sync at a time (the writer's, a caller's, close's): they share one connection.
        self._syncing = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Used by one thread at a time: this constructor, the writer, then close().
            self._db = sqlite3.connect(path, check_same_thread=False, timeout=5)
            self._db.execute("pragma journal_mode = wal")
            self._db.execute("pragma synchronous = normal")
            with self._db:
                self._db.executescript(SCHEMA)
                oldest = self._today() - dt.timedelta(days=KEEP_DAYS)
                self._db.execute("delete from rows_scanned where day < ?", (oldest.isoformat(),))
            self.sync()
        except (OSError, sqlite3.Error) as error:
            raise QuotaStoreError(
                f"cannot open the query quota file {path}: {error}; it lives in "
                "SLUICE_DATA_DIR, which must be writable"
            ) from None
        self._writer = threading.Thread(target=self._write_behind, name="quotas", daemon=True)
        self._writer.start()

    def _today(self) -> dt.date:
        return dt.datetime.fromtimestamp(self.clock(), dt.UTC).date()

    def admit(self, name: str) -> None:
        """Count one request of ``name``; refuse when it is over either quota."""
        now = self.clock()
        today = dt.datetime.fromtimestamp(now, dt.UTC).date().isoformat()
        cutoff = now - WINDOW_SECONDS
        with self._lock:
            synced = self._synced.get(name)
            count = 0
            if synced:
                # A second leaves the window when all of it is older than the window.
                while synced and synced[0][0] + 1 <= cutoff:
                    synced.popleft()
                count = sum(requests for _, requests in synced)
            own = self._own.get(name)
            if own is None:
                own = self._own[name] = collections.deque()
            while own and own[0][0] <= cutoff:
                own.popleft()
            count += len(own)
            if count < self.per_minute:
                own.append((now, next(self._numbers)))
                self._unwritten.append((name, now))
            else:
                oldest = min(float(synced[0][0]) if synced else now, own[0][0] if own else now)
            used = self._used((name, today))
        if count >= self.per_minute:
            wait = int(oldest + WINDOW_SECONDS - now) + 1
            raise QueryRefused(
                "queries_per_minute",
                429,
                f"read key {name!r} sent {self.per_minute} queries in the last minute "
                f"(SLUICE_QUERY_PER_MINUTE); retry in {wait} s",
            )
        if used >= self.scan_rows_per_day:
            raise QueryRefused(
                "rows_scanned_per_day",
                429,
                f"read key {name!r} scanned {used:,} rows today; the limit is "
                f"{self.scan_rows_per_day:,} per UTC day (SLUICE_QUERY_SCAN_ROWS_PER_DAY)",
            )

    def charge(self, name: str, rows: int) -> int:
        """Add the rows a query of ``name`` scanned to today's total; the new total."""
        key = (name, self._today().isoformat())
        with self._lock:
            self._unwritten_rows[key] = self._unwritten_rows.get(key, 0) + rows
            return self._used(key)

    def _used(self, key: tuple[str, str]) -> int:
        """Rows scanned by (key, day), counted here or in the file (the lock held)."""
        return (
            self._scanned.get(key, 0)
            + self._writing_rows.get(key, 0)
            + self._unwritten_rows.get(key, 0)
        )

    # -- the file behind the counts --------------------------------------------------------

    def _write_behind(self) -> None:
        while not self._stop.wait(SYNC_SECONDS):
            try:
                self.sync()
            except sqlite3.Error:
                # Busy or locked by another process past the timeout: the counts stay in
                # memory and the next sync writes them.
                continue

    def sync(self) -> None:
        """Write the counts made here since the last sync and read everyone's back, in one
        transaction (the writer thread calls it every ``SYNC_SECONDS``)."""
        with self._syncing:
            self._sync()

    def _sync(self) -> None:
        with self._lock:
            requests, self._unwritten = self._unwritten, []
            rows, self._unwritten_rows = self._unwritten_rows, {}
            self._writing_rows = rows
            # Every request numbered up to here is in ``requests`` (or left the window).
            written_up_to = next(self._numbers) - 1
        now = self.clock()
        today = dt.datetime.fromtimestamp(now, dt.UTC).date().isoformat()
        try:
            with self._db:
                self._db.execute("begin immediate")
                self._db.executemany("insert into requests values (?, ?)", requests)
                self._db.executemany(
                    "insert into rows_scanned values (?, ?, ?) "
                    "on conflict (reader, day) do update set rows = rows + excluded.rows",
                    [(name, day, added) for (name, day), added in rows.items()],
                )
                self._db.execute("delete from requests where at <= ?", (now - WINDOW_SECONDS,))
                seconds = self._db.execute(
                    "select reader, cast(at as integer) as second, count(*) from requests "
                    "group by reader, second order by reader, second"
                ).fetchall()
                scanned = self._db.execute(
                    "select reader, rows from rows_scanned where day = ?", (today,)
                ).fetchall()
        except sqlite3.Error:
            # Nothing was written: put the counts back, ahead of those made meanwhile.
            with self._lock:
                self._unwritten[:0] = requests
                self._writing_rows = {}
                for key, added in rows.items():
                    self._unwritten_rows[key] = self._unwritten_rows.get(key, 0) + added
            raise
        synced: dict[str, collections.deque[list[int]]] = {}
        for name, second, count in seconds:
            synced.setdefault(name, collections.deque()).append([second, count])
        with self._lock:
            self._synced = synced
            # What this sync wrote is now among the file's counts.
            for name, own in list(self._own.items()):
                while own and own[0][1] <= written_up_to:
                    own.popleft()
                if not own:
                    del self._own[name]
            self._scanned = {(name, today): total for name, total in scanned}
            self._writing_rows = {}

    def close(self) -> None:
        """Stop the writer and write what it has not (a restart then forgets nothing)."""
        self._stop.set()
        self._writer.join()
        try:
            self.sync()
        finally:
            self._db.close()
