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
  runs this way in a warm child process with capped memory (``serving.workers``).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Hashable, Iterator, Mapping
from dataclasses import dataclass
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


def _guarded(
    con: duckdb.DuckDBPyConnection,
    checked: _Checked,
    params: dict[str, Any],
    limits: QueryLimits,
    run_id: str,
) -> QueryResult:
    """Run a checked SELECT on a locked connection: the scan estimate first, then the query
    under a timer that interrupts it, cut at ``max_rows``."""
    query = checked.query
    tables: tuple[SampledTable, ...] = ()
    if checked.sample is not None:
        sampled, found = sample_tables(query, checked.sample, _table_rows(con))
        query, tables = sampled, tuple(found)
    read = _scan_estimate(con, query, tables, params, limits)
    timed_out = threading.Event()

    def stop() -> None:
        timed_out.set()
        con.interrupt()

    timer = threading.Timer(limits.timeout_seconds, stop)
    timer.start()
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
        timer.cancel()
    truncated = len(rows) > limits.max_rows
    return QueryResult(
        columns, rows[: limits.max_rows], truncated, read, run_id, sampled_tables=tables
    )


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
        return _guarded(con, checked, dict(parameters or {}), limits, snapshot_run_id(con))


@dataclass
class _Opened:
    """One opening of the snapshot file, and how many queries are using it."""

    stamp: Hashable
    con: duckdb.DuckDBPyConnection
    run_id: str
    users: int = 0
    retired: bool = False


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
    once the queries still reading it are done.
    """

    def __init__(self, path: Path, limits: QueryLimits) -> None:
        self.path = path
        self.limits = limits
        self._current: _Opened | None = None
        self._lock = threading.Lock()

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
            # Creating a cursor touches the shared connection: done under the lock.
            cursor = opened.con.cursor()
        return opened, cursor

    def _retire(self, opened: _Opened) -> None:
        opened.retired = True
        if opened.users == 0:
            opened.con.close()

    def _release(self, opened: _Opened, cursor: duckdb.DuckDBPyConnection) -> None:
        cursor.close()
        with self._lock:
            opened.users -= 1
            if opened.retired and opened.users == 0:
                opened.con.close()

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
        try:
            # USE is per connection, and a cursor is a connection of its own.
            cursor.execute(f"use {SNAPSHOT_CATALOG}")
            return _guarded(cursor, checked, dict(parameters or {}), self.limits, opened.run_id)
        finally:
            self._release(opened, cursor)

    def close(self) -> None:
        with self._lock:
            if self._current is not None:
                self._retire(self._current)
                self._current = None
