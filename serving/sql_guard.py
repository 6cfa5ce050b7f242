"""The checks a query's SQL must pass before it runs on the serving snapshot.

Hand-written because no library judges DuckDB SQL as DuckDB reads it; every check asks
DuckDB's own parser instead of matching text (no regex):

- ``check_select``: exactly one statement, of type SELECT, that names none of DuckDB's
  functions describing the server (its files, folders and settings);
- ``check_scan``: ``EXPLAIN``'s estimates must stay within ``max_scan_rows`` rows read and
  produced by any step (a cross join of two big tables is refused before it starts);
- ``approximate_distinct``: count(DISTINCT ...) rewritten on the syntax tree, for callers
  that ask for approximate answers.

The syntax trees come from ``json_serialize_sql`` on an in-memory DuckDB that each thread
keeps (``syntax_tree``, ``sql_of``): opening one costs about 20 ms, asking a kept one about
0.5 ms, and that connection never opens a file or runs the query. ``check_select`` and
``approximate_distinct`` depend on the SQL text alone, so their answers are kept per text
(a saved report's SQL is checked once, not on every request).

Each refusal is a ``QueryRefused`` that names the limit and the HTTP status. Running the
checked query is ``serving.query_runner``'s job. Reads no environment: the limits come from
the caller.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import duckdb

# Distinct SQL texts whose checks are kept: the saved reports, and the ad-hoc queries that
# dashboards and BI tools repeat.
CHECKED_TEXTS = 1024
_parsers = threading.local()


def _parser() -> duckdb.DuckDBPyConnection:
    """This thread's in-memory DuckDB, used for its parser only."""
    con: duckdb.DuckDBPyConnection | None = getattr(_parsers, "con", None)
    if con is None:
        con = _parsers.con = duckdb.connect()
    return con


def syntax_tree(sql: str) -> dict[str, Any]:
    """DuckDB's syntax tree of ``sql`` (``json_serialize_sql``); ``{"error": true, ...}`` when
    it does not parse or is not a SELECT."""
    row = _parser().execute("select json_serialize_sql(?)", [sql]).fetchone()
    tree: dict[str, Any] = json.loads(row[0]) if row else {"error": True}
    return tree


def sql_of(tree: dict[str, Any]) -> str | None:
    """The SQL of a syntax tree (``json_deserialize_sql``)."""
    row = _parser().execute("select json_deserialize_sql(?)", [json.dumps(tree)]).fetchone()
    return str(row[0]) if row else None


class QueryRefused(Exception):
    """A query that broke a limit; ``limit`` names it, ``status`` is the HTTP answer."""

    def __init__(self, limit: str, status: int, message: str) -> None:
        super().__init__(message)
        self.limit = limit
        self.status = status
        self.message = message


@functools.lru_cache(maxsize=CHECKED_TEXTS)
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
    query = statement.query.strip().rstrip(";")
    _refuse_system_functions(query)
    return query


# DuckDB's own metadata functions tell where the server keeps its files (duckdb_databases()
# and pragma_database_list() show the snapshot's path; current_setting() shows folders).
# The marts are described by information_schema, which stays open.
_SYSTEM_PREFIXES = ("duckdb_", "pragma_")
_SYSTEM_FUNCTIONS = frozenset({"current_setting", "getenv", "which_secret", "pg_settings"})


def _function_names(node: Any) -> Iterator[str]:
    """Every function and table named anywhere in a serialized query."""
    if isinstance(node, dict):
        # Table functions may be named without parentheses, like a table.
        for key in ("function_name", "table_name"):
            name = node.get(key)
            if isinstance(name, str):
                yield name.lower()
        for value in node.values():
            yield from _function_names(value)
    elif isinstance(node, list):
        for value in node:
            yield from _function_names(value)


def _refuse_system_functions(query: str) -> None:
    tree = syntax_tree(query)
    if tree.get("error"):
        raise QueryRefused(
            "statement",
            400,
            "the query uses syntax the guard cannot inspect: "
            f"{tree.get('error_message', 'unknown')}",
        )
    for name in _function_names(tree):
        if name.startswith(_SYSTEM_PREFIXES) or name in _SYSTEM_FUNCTIONS:
            raise QueryRefused(
                "system_function",
                403,
                f"{name}() describes the server, not the marts; use information_schema "
                "to list tables and columns",
            )


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


@functools.lru_cache(maxsize=CHECKED_TEXTS)
def approximate_distinct(sql: str) -> str:
    """``sql`` with count(DISTINCT ...) replaced by HyperLogLog's approx_count_distinct.

    Done on DuckDB's own syntax tree (json_serialize_sql / json_deserialize_sql), so string
    literals and comments that mention count(distinct) are left alone. Named parameters
    ($start) survive the round trip. A query without distinct counts comes back unchanged.
    """
    tree = syntax_tree(sql)
    if tree.get("error") or not _rewrite_distinct_counts(tree):
        return sql
    return sql_of(tree) or sql


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


def plan_estimates(plan: Sequence[tuple[str, str]]) -> tuple[int, int]:
    """(rows read, most rows any step makes), as the plan (the rows of ``EXPLAIN (FORMAT
    JSON)``) estimates them."""
    read, peak = 0, 0
    for _kind, text in plan:
        for node in json.loads(text):
            node_read, node_peak = _plan_rows(node)
            read, peak = read + node_read, max(peak, node_peak)
    return read, peak


def check_scan(plan: Sequence[tuple[str, str]], max_scan_rows: int) -> int:
    """The rows the plan (the rows of ``EXPLAIN (FORMAT JSON)``) estimates it reads, else
    QueryRefused(limit="scan_limit") when it reads or makes more than ``max_scan_rows``."""
    read, peak = plan_estimates(plan)
    check_estimate(read, peak, max_scan_rows)
    return read


def check_estimate(read: int, peak: int, max_scan_rows: int) -> None:
    """QueryRefused(limit="scan_limit") when ``read`` or ``peak`` is over ``max_scan_rows``."""
    estimate = max(read, peak)
    if estimate > max_scan_rows:
        raise QueryRefused(
            "scan_limit",
            413,
            f"the query would handle about {estimate:,} rows; the limit is "
            f"{max_scan_rows:,} (SLUICE_QUERY_MAX_SCAN_ROWS): filter or aggregate",
        )
