"""Ad-hoc SQL on the serving snapshot, within limits a security reviewer can check.

Every query runs on its own in-memory DuckDB that attaches the snapshot read-only, then
turns off file and network access (``enable_external_access = false``: no ``read_csv``, no
``COPY ... TO``, no ``ATTACH``, no extension install or load) and locks the configuration
so the query cannot turn it back on. Before it runs:

- DuckDB's own parser must find exactly one statement, of type SELECT (no regex);
- ``EXPLAIN`` must estimate at most ``max_scan_rows`` rows read and produced by any step
  (a cross join of two big tables is refused before it starts).

While it runs, a timer thread interrupts it after ``timeout_seconds``; at most ``max_rows``
rows come back (the answer says when it was cut). Each refusal is a ``QueryRefused`` that
names the limit. Reads no environment: the limits come from the caller (``Settings``).

``run_isolated`` does the same in a child process (forked from a clean fork server) whose
address space is capped: some DuckDB functions (``repeat('x', 1e9)``) allocate outside the
memory limit and cannot be interrupted, so the server kills the child when it overstays the
timeout, and a child that runs out of memory or crashes takes only its own query down.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import resource
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from serving.snapshot import META_SCHEMA, VERSION_TABLE, SnapshotMissing


@dataclass(frozen=True)
class QueryLimits:
    max_rows: int = 10_000
    timeout_seconds: float = 5.0
    max_scan_rows: int = 50_000_000
    memory_limit: str = "512MB"
    # run_isolated: the child's address space, and what an answer may weigh.
    max_process_bytes: int = 2 << 30
    max_result_bytes: int = 32 << 20


class QueryRefused(Exception):
    """A query that broke a limit; ``limit`` names it, ``status`` is the HTTP answer."""

    def __init__(self, limit: str, status: int, message: str) -> None:
        super().__init__(message)
        self.limit = limit
        self.status = status
        self.message = message


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]
    truncated: bool
    scanned_rows: int
    run_id: str  # the snapshot version the rows come from


def check_select(sql: str) -> str:
    """The one SELECT statement in ``sql``, else QueryRefused(limit="statement")."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as error:
        first_line = str(error).splitlines()[0]
        raise QueryRefused("syntax", 400, f"the query does not parse: {first_line}") from None
    if len(statements) != 1:
        raise QueryRefused(
            "statement", 400, f"send exactly one SELECT statement; got {len(statements)}"
        )
    statement = statements[0]
    if statement.type != duckdb.StatementType.SELECT:
        kind = statement.type.name
        raise QueryRefused("statement", 400, f"only SELECT statements may run; this one is {kind}")
    return statement.query.strip().rstrip(";")


def _rewrite_distinct_counts(node: Any) -> int:
    """Turn every count(DISTINCT x) of a parsed query into approx_count_distinct(x)."""
    changed = 0
    if isinstance(node, dict):
        if (
            node.get("class") == "FUNCTION"
            and node.get("function_name") == "count"
            and node.get("distinct") is True
            and len(node.get("arguments") or node.get("children") or []) == 1
        ):
            node["function_name"] = "approx_count_distinct"
            node["distinct"] = False
            if "qualified_name" in node:
                node["qualified_name"] = {"path": ["approx_count_distinct"]}
            changed += 1
        for value in node.values():
            changed += _rewrite_distinct_counts(value)
    elif isinstance(node, list):
        for value in node:
            changed += _rewrite_distinct_counts(value)
    return changed


def approximate_distinct(sql: str) -> str:
    """``sql`` with count(DISTINCT ...) replaced by HyperLogLog's approx_count_distinct.

    Done on DuckDB's own syntax tree (json_serialize_sql / json_deserialize_sql), so string
    literals and comments that mention count(distinct) are left alone. Named parameters
    ($start) survive the round trip. A query without distinct counts comes back unchanged.
    """
    with duckdb.connect() as con:
        row = con.execute("select json_serialize_sql(?)", [sql]).fetchone()
        tree = json.loads(row[0]) if row else {"error": True}
        if tree.get("error") or not _rewrite_distinct_counts(tree):
            return sql
        back = con.execute("select json_deserialize_sql(?)", [json.dumps(tree)]).fetchone()
    return str(back[0]) if back else sql


def _plan_rows(node: dict[str, Any]) -> tuple[int, int]:
    """(rows read by the plan's leaves, most rows any step produces), from EXPLAIN's estimates."""
    children = [_plan_rows(child) for child in node.get("children", [])]
    estimate = node.get("extra_info", {}).get("Estimated Cardinality")
    try:
        rows = int(estimate)
    except (TypeError, ValueError):
        rows = 0
    if not children:
        return rows, rows
    read = sum(child[0] for child in children)
    peak = max(child[1] for child in children)
    if not rows and node.get("name") in ("CROSS_PRODUCT", "NESTED_LOOP_JOIN", "BLOCKWISE_NL_JOIN"):
        # A cross product has no estimate of its own: it makes every pair of its inputs.
        rows = 1
        for child in children:
            rows *= max(child[1], 1)
    return read, max(peak, rows)


@contextlib.contextmanager
def locked_snapshot(snapshot: Path, limits: QueryLimits) -> Iterator[duckdb.DuckDBPyConnection]:
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
        con.execute(f"attach {path} as snapshot (read_only)")
        con.execute("use snapshot")
        con.execute("set enable_external_access = false")
        con.execute("set autoinstall_known_extensions = false")
        con.execute("set autoload_known_extensions = false")
        con.execute("set lock_configuration = true")
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


def run_guarded(
    snapshot: Path,
    sql: str,
    limits: QueryLimits,
    parameters: Mapping[str, Any] | None = None,
    approx: bool = False,
) -> QueryResult:
    """Check and run one SELECT on the snapshot within ``limits``; raises QueryRefused."""
    query = check_select(sql)
    if approx:
        query = approximate_distinct(query)
    params = dict(parameters or {})
    with locked_snapshot(snapshot, limits) as con:
        run_id = snapshot_run_id(con)
        try:
            plan = con.execute(f"explain (format json) {query}", params).fetchall()
        except duckdb.Error as error:
            raise _refusal(error) from None
        read, peak = 0, 0
        for _kind, text in plan:
            for node in json.loads(text):
                node_read, node_peak = _plan_rows(node)
                read, peak = read + node_read, max(peak, node_peak)
        estimate = max(read, peak)
        if estimate > limits.max_scan_rows:
            raise QueryRefused(
                "scan_limit",
                413,
                f"the query would handle about {estimate:,} rows; the limit is "
                f"{limits.max_scan_rows:,} (SLUICE_QUERY_MAX_SCAN_ROWS): filter or aggregate",
            )
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
    return QueryResult(columns, rows[: limits.max_rows], truncated, read, run_id)


# Time the child gets beyond the timeout to stop on its own interrupt before it is killed.
KILL_GRACE_SECONDS = 1.0


def _result_bytes(rows: list[tuple[Any, ...]]) -> int:
    return sum(len(str(value)) for row in rows for value in row)


def _child(
    connection: Any,
    snapshot: Path,
    sql: str,
    limits: QueryLimits,
    parameters: Mapping[str, Any] | None,
    approx: bool,
) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (limits.max_process_bytes, limits.max_process_bytes))
    try:
        result = run_guarded(snapshot, sql, limits, parameters, approx)
        size = _result_bytes(result.rows)
        if size > limits.max_result_bytes:
            raise QueryRefused(
                "result_size",
                413,
                f"the answer would be about {size:,} bytes; the limit is "
                f"{limits.max_result_bytes:,}: select fewer or shorter values",
            )
        connection.send(("ok", result))
    except QueryRefused as error:
        connection.send(("refused", error.limit, error.status, error.message))
    except SnapshotMissing as error:
        connection.send(("missing", str(error)))
    except MemoryError:
        connection.send(("refused", "memory", 413, "the query needs more memory than allowed"))
    finally:
        connection.close()


def _context() -> Any:
    context = multiprocessing.get_context("forkserver")
    # Children start with DuckDB loaded, so a query costs a fork, not an import.
    context.set_forkserver_preload(["serving.guardrails"])
    return context


def run_isolated(
    snapshot: Path,
    sql: str,
    limits: QueryLimits,
    parameters: Mapping[str, Any] | None = None,
    approx: bool = False,
) -> QueryResult:
    """``run_guarded`` in a child process with capped memory, killed if it overstays."""
    context = _context()
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(
        target=_child,
        args=(sender, snapshot, sql, limits, parameters, approx),
        daemon=True,
    )
    child.start()
    sender.close()
    try:
        if not receiver.poll(limits.timeout_seconds + KILL_GRACE_SECONDS):
            raise QueryRefused(
                "timeout",
                408,
                f"the query ran longer than {limits.timeout_seconds:g} s "
                "(SLUICE_QUERY_TIMEOUT_SECONDS), ignored the interrupt, and its process was killed",
            )
        try:
            outcome = receiver.recv()
        except EOFError:
            raise QueryRefused(
                "memory",
                413,
                "the query's process ended without an answer (out of memory or a crash); "
                "ask for less at once",
            ) from None
    finally:
        receiver.close()
        if child.is_alive():
            child.kill()
        child.join(5)
    if outcome[0] == "ok":
        result: QueryResult = outcome[1]
        return result
    if outcome[0] == "missing":
        raise SnapshotMissing(outcome[1])
    _, limit, status, message = outcome
    raise QueryRefused(limit, status, message)
