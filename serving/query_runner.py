"""Running checked SELECTs on the serving snapshot, within limits a security reviewer can check.

Every query runs on an in-memory DuckDB that attaches the snapshot read-only, then turns off
file and network access (``enable_external_access = false``: no ``read_csv``, no
``COPY ... TO``, no ``ATTACH``, no extension install or load) and locks the configuration
so the query cannot turn it back on. Before it runs, its SQL passes ``serving.sql_guard``
(one SELECT, by DuckDB's own parser; the plan's scan estimate within ``max_scan_rows``).
While it runs, a timer thread interrupts it after ``timeout_seconds``; at most ``max_rows``
rows come back (the answer says when it was cut). Each refusal is a ``QueryRefused`` that
names the limit. Reads no environment: the limits come from the caller (``Settings``).

Two ways to run, for two kinds of SQL:

- ``run_guarded`` opens the snapshot for one query.
- ``SharedSnapshot`` keeps one locked connection open and gives each query a cursor of its
  own, opening the new snapshot when one replaces the file: a few milliseconds per query.
  The server runs the saved reports' reviewed SQL this way in its own process; ad-hoc SQL
  runs this way in a warm child process with capped memory (``serving.workers``). Its
  cursors are kept for the next query (each already on the snapshot's catalog), and one
  watchdog thread times every query instead of a timer thread each. For reviewed SQL only
  (``keep_estimates=True``), each SQL text's scan estimate is taken once per snapshot
  opening and kept (it does not depend on the parameters' values, save for a window the
  zone maps rule out, whose estimate of 0 is not kept); it is still checked against
  ``max_scan_rows`` on every run, and a new snapshot takes it again.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import threading
import time
from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from serving.sampling import Sample, SampledTable, sample_tables
from serving.snapshot import META_SCHEMA, VERSION_TABLE, SnapshotMissing
from serving.sql_guard import (
    QueryRefused,
    approximate_distinct,
    check_estimate,
    check_scan,
    check_select,
    plan_estimates,
)

# The name the snapshot is attached under; queries see its schemas (marts.dau) directly.
SNAPSHOT_CATALOG = "snapshot"


@dataclass(frozen=True)
class QueryLimits:
    max_rows: int = 10_000
    timeout_seconds: float = 5.0
    max_scan_rows: int = 50_000_000
    memory_limit: str = "512MB"
    # serving.workers: a worker's address space, and what an answer may weigh.
    max_process_bytes: int = 2 << 30
    max_result_bytes: int = 32 << 20


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]
    truncated: bool
    scanned_rows: int
    run_id: str  # the snapshot version the rows come from
    # The tables read through TABLESAMPLE (serving.sampling), in the query's order.
    sampled_tables: tuple[SampledTable, ...] = ()


def open_locked(snapshot: Path, limits: QueryLimits) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the snapshot attached read-only and no way out of it."""
    if not snapshot.exists():
        raise SnapshotMissing(
            f"no serving snapshot at {snapshot}; it is published after each build "
            "(run `sluice materialize --start D1 --end D2`)"
        )
    config: dict[str, str | bool | int | float | list[str]] = {
        "threads": 1,
        "memory_limit": limits.memory_limit,
        "temp_directory": "",
    }
    con = duckdb.connect(":memory:", config=config)
    try:
        path = "'" + str(snapshot).replace("'", "''") + "'"
        con.execute(f"attach {path} as {SNAPSHOT_CATALOG} (read_only)")
        con.execute(f"use {SNAPSHOT_CATALOG}")
        con.execute("set enable_external_access = false")
        con.execute("set autoinstall_known_extensions = false")
        con.execute("set autoload_known_extensions = false")
        con.execute("set lock_configuration = true")
    except BaseException:
        con.close()
        raise
    return con


@contextlib.contextmanager
def locked_snapshot(snapshot: Path, limits: QueryLimits) -> Iterator[duckdb.DuckDBPyConnection]:
    """``open_locked``, closed at the end of the block."""
    con = open_locked(snapshot, limits)
    try:
        yield con
    finally:
        con.close()


def snapshot_run_id(con: duckdb.DuckDBPyConnection) -> str:
    row = con.execute(f"select run_id from {META_SCHEMA}.{VERSION_TABLE}").fetchone()
    return str(row[0]) if row else ""


def _refusal(error: duckdb.Error) -> QueryRefused:
    first_line = str(error).splitlines()[0]
    if isinstance(error, duckdb.OutOfMemoryException):
        return QueryRefused("memory", 413, f"the query needs more memory: {first_line}")
    if isinstance(error, duckdb.PermissionException):
        return QueryRefused(
            "external_access", 403, f"files, network and extensions are off: {first_line}"
        )
    return QueryRefused("query_error", 400, first_line)


@dataclass(frozen=True)
class _Checked:
    """A checked SELECT, and the sample to read its tables through (``_guarded`` applies it:
    each table's method depends on its size in the snapshot)."""

    query: str
    sample: Sample | None = None


def _checked(sql: str, approx: bool, sample: Sample | None = None) -> _Checked:
    query = check_select(sql)
    return _Checked(approximate_distinct(query) if approx else query, sample)


def _table_rows(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Rows of each table of the snapshot, by ``schema.table`` (and ``table`` for ``main``)."""
    rows = con.execute(
        "select schema_name, table_name, estimated_size from duckdb_tables() "
        "where database_name = ?",
        [SNAPSHOT_CATALOG],
    ).fetchall()
    sizes = {f"{schema}.{table}".lower(): int(size or 0) for schema, table, size in rows}
    sizes |= {table.lower(): int(size or 0) for schema, table, size in rows if schema == "main"}
    return sizes


def _explain(
    con: duckdb.DuckDBPyConnection, query: str, params: dict[str, Any]
) -> list[tuple[str, str]]:
    try:
        return con.execute(f"explain (format json) {query}", params).fetchall()
    except duckdb.Error as error:
        raise _refusal(error) from None


def _scan_estimate(
    con: duckdb.DuckDBPyConnection,
    query: str,
    tables: tuple[SampledTable, ...],
    params: dict[str, Any],
    limits: QueryLimits,
) -> int:
    """The rows the query reads, checked against ``max_scan_rows`` before it runs.

    A sampled query's plan does not say what it reads: DuckDB estimates a sampled scan at 0
    rows. Each sampled table is counted from its size instead: all its rows for ``bernoulli``,
    which looks at every row, and the rate's share for ``system``, which skips the other
    vectors. The steps after the scan are judged on the sampled plan."""
    if not tables:
        return check_scan(_explain(con, query, params), limits.max_scan_rows)
    read, peak = plan_estimates(_explain(con, query, params))
    read += sum(table.read for table in tables)
    check_estimate(read, peak, limits.max_scan_rows)
    return read


class _Watchdog:
    """One thread that calls each due callback: a query's timeout without a thread per query
    (starting a ``threading.Timer`` costs about 0.25 ms)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._due: list[list[Any]] = []  # [deadline, sequence, callback or None when cancelled]
        self._sequence = itertools.count()
        self._thread: threading.Thread | None = None
        self._closed = False

    def start(self, seconds: float, callback: Callable[[], None]) -> list[Any]:
        entry = [time.monotonic() + seconds, next(self._sequence), callback]
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="sluice-query-watchdog", daemon=True
                )
                self._thread.start()
            heapq.heappush(self._due, entry)
            if self._due[0] is entry:
                self._cond.notify()
        return entry

    def cancel(self, entry: list[Any]) -> bool:
        """Cancel ``entry``; False when its callback was already called (or is being called)."""
        with self._cond:
            pending = entry[2] is not None
            entry[2] = None
            return pending

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    while self._due and self._due[0][2] is None:
                        heapq.heappop(self._due)
                    if self._closed:
                        return
                    if not self._due:
                        self._cond.wait()
                        continue
                    wait = self._due[0][0] - time.monotonic()
                    if wait <= 0:
                        entry = heapq.heappop(self._due)
                        callback, entry[2] = entry[2], None
                        break
                    self._cond.wait(wait)
            # A callback that fails must not stop the thread that times every other query.
            with contextlib.suppress(Exception):
                callback()


# (rows read, most rows any step makes) of each SQL text, for one opening of the snapshot.
Estimates = dict[str, tuple[int, int]]


def _guarded(
    con: duckdb.DuckDBPyConnection,
    checked: _Checked,
    params: dict[str, Any],
    limits: QueryLimits,
    run_id: str,
    estimates: Estimates | None = None,
    watchdog: _Watchdog | None = None,
) -> tuple[QueryResult, bool]:
    """Run a checked SELECT on a locked connection: the scan estimate first (taken from
    ``estimates`` when it holds the SQL, kept there otherwise), then the query under a timer
    that interrupts it, cut at ``max_rows``. Also says whether the timer went off."""
    query = checked.query
    tables: tuple[SampledTable, ...] = ()
    if checked.sample is not None:
        sampled, found = sample_tables(query, checked.sample, _table_rows(con))
        query, tables = sampled, tuple(found)
    if estimates is not None and not tables:
        plan = estimates.get(query)
        if plan is None:
            plan = plan_estimates(_explain(con, query, params))
            # Zero is a window the zone maps rule out (before the first day...), not the
            # SQL's estimate: kept, it would let every later window pass unseen and uncharged.
            if plan[0] > 0:
                estimates[query] = plan
        check_estimate(plan[0], plan[1], limits.max_scan_rows)
        read = plan[0]
    else:
        read = _scan_estimate(con, query, tables, params, limits)
    timed_out = threading.Event()

    def stop() -> None:
        timed_out.set()
        con.interrupt()

    if watchdog is not None:
        entry = watchdog.start(limits.timeout_seconds, stop)
        cancel: Callable[[], object] = lambda: watchdog.cancel(entry)  # noqa: E731
    else:
        timer = threading.Timer(limits.timeout_seconds, stop)
        timer.start()
        cancel = timer.cancel
    fired = True
    try:
        cursor = con.execute(query, params)
        columns = [d[0] for d in cursor.description or []]
        rows = cursor.fetchmany(limits.max_rows + 1)
    except duckdb.Error as error:
        if timed_out.is_set():
            raise QueryRefused(
                "timeout",
                408,
                f"the query ran longer than {limits.timeout_seconds:g} s "
                "(SLUICE_QUERY_TIMEOUT_SECONDS) and was stopped",
            ) from None
        raise _refusal(error) from None
    finally:
        fired = cancel() is False or timed_out.is_set()
    truncated = len(rows) > limits.max_rows
    result = QueryResult(
        columns, rows[: limits.max_rows], truncated, read, run_id, sampled_tables=tables
    )
    return result, fired


def run_guarded(
    snapshot: Path,
    sql: str,
    limits: QueryLimits,
    parameters: Mapping[str, Any] | None = None,
    approx: bool = False,
    sample: Sample | None = None,
) -> QueryResult:
    """Check and run one SELECT on the snapshot within ``limits``; raises QueryRefused."""
    checked = _checked(sql, approx, sample)
    with locked_snapshot(snapshot, limits) as con:
        return _guarded(con, checked, dict(parameters or {}), limits, snapshot_run_id(con))[0]


@dataclass
class _Opened:
    """One opening of the snapshot file, and how many queries are using it."""

    stamp: Hashable
    con: duckdb.DuckDBPyConnection
    run_id: str
    users: int = 0
    retired: bool = False
    # Cursors done with a query, already on the snapshot's catalog, for the next ones.
    idle: list[duckdb.DuckDBPyConnection] = field(default_factory=list)
    estimates: Estimates = field(default_factory=dict)

    def close(self) -> None:
        for cursor in self.idle:
            cursor.close()
        self.idle.clear()
        self.con.close()


def file_stamp(path: Path) -> Hashable:
    """What changes when a new snapshot is renamed over ``path``."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise SnapshotMissing(
            f"no serving snapshot at {path}; it is published after each build "
            "(run `sluice materialize --start D1 --end D2`)"
        ) from None
    return (stat.st_ino, stat.st_mtime_ns, stat.st_size)


class SharedSnapshot:
    """``run_guarded`` on one locked connection to the snapshot, kept open between queries.

    For reviewed SQL only (the saved reports): the query runs in the caller's process, which
    saves the child process and the opening of the snapshot (~100 ms), but a query that
    allocates outside DuckDB's memory limit would take the caller down with it. Each query
    gets its own cursor, so queries on different threads run side by side. When a new
    snapshot is renamed over the file, the next query opens it; the old connection is closed
    once the queries still reading it are done. ``keep_estimates``: for reviewed SQL, keep
    each SQL text's scan estimate for the snapshot opened (see the module's docstring).
    """

    def __init__(self, path: Path, limits: QueryLimits, keep_estimates: bool = False) -> None:
        self.path = path
        self.limits = limits
        self.keep_estimates = keep_estimates
        self._current: _Opened | None = None
        self._lock = threading.Lock()
        self._watchdog = _Watchdog()

    def _acquire(self) -> tuple[_Opened, duckdb.DuckDBPyConnection]:
        stamp = file_stamp(self.path)
        with self._lock:
            opened = self._current
            if opened is None or opened.stamp != stamp:
                con = open_locked(self.path, self.limits)
                fresh = _Opened(stamp, con, snapshot_run_id(con))
                if opened is not None:
                    self._retire(opened)
                self._current = opened = fresh
            opened.users += 1
            if opened.idle:
                return opened, opened.idle.pop()
            # Creating a cursor touches the shared connection: done under the lock.
            cursor = opened.con.cursor()
        try:
            # USE is per connection, and a cursor is a connection of its own.
            cursor.execute(f"use {SNAPSHOT_CATALOG}")
        except BaseException:
            self._release(opened, cursor, keep=False)
            raise
        return opened, cursor

    def _retire(self, opened: _Opened) -> None:
        opened.retired = True
        if opened.users == 0:
            opened.close()

    def _release(self, opened: _Opened, cursor: duckdb.DuckDBPyConnection, keep: bool) -> None:
        """Done with ``cursor``: kept for the next query when ``keep`` (it answered, and no
        interrupt may reach it later), else closed."""
        with self._lock:
            opened.users -= 1
            if keep and not opened.retired:
                opened.idle.append(cursor)
                return
        cursor.close()
        with self._lock:
            if opened.retired and opened.users == 0:
                opened.close()

    def run(
        self,
        sql: str,
        parameters: Mapping[str, Any] | None = None,
        approx: bool = False,
        sample: Sample | None = None,
    ) -> QueryResult:
        """Check and run one SELECT within the limits; raises QueryRefused or SnapshotMissing."""
        checked = _checked(sql, approx, sample)
        opened, cursor = self._acquire()
        keep = False
        try:
            result, fired = _guarded(
                cursor,
                checked,
                dict(parameters or {}),
                self.limits,
                opened.run_id,
                estimates=opened.estimates if self.keep_estimates else None,
                watchdog=self._watchdog,
            )
            keep = not fired
            return result
        finally:
            self._release(opened, cursor, keep)

    def close(self) -> None:
        with self._lock:
            if self._current is not None:
                self._retire(self._current)
                self._current = None
        self._watchdog.close()
