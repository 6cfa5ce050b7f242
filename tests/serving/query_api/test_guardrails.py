"""The pieces of the guardrails that need no server: DuckDB's parser decides what a
statement is, approx rewrites distinct counts on the syntax tree, not the text, and the
connection kept open for saved reports keeps every guard and follows new snapshots."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb
import pytest

from serving.query_runner import QueryLimits, QueryResult, SharedSnapshot
from serving.snapshot import publish_snapshot
from serving.sql_guard import QueryRefused, approximate_distinct, check_select
from serving.workers import QueryWorkers
from tests.serving.query_api.conftest import TODAY, build_warehouse


@pytest.mark.parametrize(
    "sql",
    [
        "select 1",
        "from marts.dau",
        "with days as (select 1 as n) select * from days",
        "(select 1) union all (select 2)",
        "select 1;",
        "-- a comment; with a semicolon\nselect 1",
    ],
)
def test_one_select_passes(sql: str) -> None:
    assert check_select(sql).lower().lstrip("-").strip()


@pytest.mark.parametrize(
    ("sql", "kind"),
    [
        ("explain select 1", "EXPLAIN"),
        ("call pragma_version()", "CALL"),
        ("export database '/tmp/x'", "EXPORT"),
        ("checkpoint", ""),
        ("select 1; ; select 2", ""),
        ("", ""),
    ],
)
def test_anything_else_is_refused(sql: str, kind: str) -> None:
    with pytest.raises(QueryRefused) as refused:
        check_select(sql)
    assert refused.value.limit == "statement" and refused.value.status == 400
    assert kind in refused.value.message


@pytest.mark.parametrize(
    "sql",
    [
        "select * from duckdb_databases()",
        "select path from pragma_database_list",
        "select * from duckdb_databases",
        "select current_setting('temp_directory')",
        "select * from pg_catalog.pg_settings",
        "select * from marts.dau where event_date in (select 1 from DuckDB_Settings())",
    ],
)
def test_functions_that_describe_the_server_are_refused(sql: str) -> None:
    with pytest.raises(QueryRefused) as refused:
        check_select(sql)
    assert refused.value.limit == "system_function" and refused.value.status == 403
    assert "information_schema" in refused.value.message


def test_information_schema_still_lists_the_marts() -> None:
    assert check_select("select table_name from information_schema.tables")


def test_approx_rewrites_the_syntax_tree() -> None:
    sql = (
        "select count(distinct user_key) as users, count(*) as rows, "
        "'count(distinct x)' as label from t where d between $start and $end"
    )
    rewritten = approximate_distinct(sql)
    assert "approx_count_distinct(user_key)" in rewritten
    assert "count_star()" in rewritten or "count(*)" in rewritten.lower()
    assert "'count(distinct x)'" in rewritten and "$start" in rewritten
    assert approximate_distinct("select sum(a) from t") == "select sum(a) from t"
    with duckdb.connect() as con:
        con.execute("create table t (user_key varchar, d date)")
        con.execute(rewritten, {"start": "2026-01-01", "end": "2026-01-31"})


def test_a_missing_snapshot_says_how_to_publish_one(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="sluice materialize"):
        QueryWorkers(tmp_path / "none.duckdb", QueryLimits()).run("select 1")


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[tuple[SharedSnapshot, Path, Path]]:
    warehouse, snapshot = tmp_path / "warehouse.duckdb", tmp_path / "snapshot.duckdb"
    build_warehouse(warehouse)
    publish_snapshot(warehouse, snapshot, "run-one")
    limits = QueryLimits(max_rows=100, timeout_seconds=2, max_scan_rows=10**10)
    reader = SharedSnapshot(snapshot, limits)
    yield reader, warehouse, snapshot
    reader.close()


@pytest.mark.parametrize(
    ("sql", "limit"),
    [
        ("select * from read_csv('/etc/passwd')", "external_access"),
        ("select * from query('set enable_external_access = true')", "query_error"),
        ("set lock_configuration = false", "statement"),
        ("attach '/tmp/other.duckdb' as other", "statement"),
        (
            "with recursive forever(n) as (select 1 union all select n + 1 from forever) "
            "select count(*) from forever",
            "timeout",
        ),
    ],
)
def test_the_reports_connection_keeps_the_guardrails(
    shared: tuple[SharedSnapshot, Path, Path], sql: str, limit: str
) -> None:
    reader, _, _ = shared
    with pytest.raises(QueryRefused) as refused:
        reader.run(sql)
    assert refused.value.limit == limit
    # The connection stays usable, and still cannot be unlocked.
    assert reader.run("select count(*) from marts.dau").rows == [(60,)]
    with pytest.raises(QueryRefused) as refused:
        reader.run("select * from read_text('/etc/hostname')")
    assert refused.value.limit == "external_access"
    cut = reader.run("select * from range(500)")
    assert cut.truncated and len(cut.rows) == 100


def test_the_reports_connection_opens_a_new_snapshot_and_lets_old_queries_finish(
    shared: tuple[SharedSnapshot, Path, Path],
) -> None:
    shared_reader, warehouse, snapshot = shared
    # The slow query gets time enough on a busy machine.
    limits = dataclasses.replace(shared_reader.limits, timeout_seconds=60)
    reader = SharedSnapshot(snapshot, limits)
    assert reader.run("select 1").run_id == "run-one"
    slow: list[QueryResult] = []
    finished: list[float] = []
    # Reads run-one for a second or so, on its own cursor of the shared connection.
    sql = "select count(*) from range(250000000) where hash(range) % 7 >= 0"

    def run_slow() -> None:
        slow.append(reader.run(sql))
        finished.append(time.monotonic())

    thread = threading.Thread(target=run_slow)
    thread.start()
    # Publish only once the slow query holds run-one's connection, however busy the machine.
    deadline = time.monotonic() + 30
    while reader._current is None or reader._current.users == 0:
        assert thread.is_alive() and time.monotonic() < deadline
        time.sleep(0.001)
    publish_snapshot(warehouse, snapshot, "run-two")
    during = reader.run("select count(*) from marts.dau")
    answered = time.monotonic()
    thread.join()
    assert during.run_id == "run-two" and during.rows == [(60,)]
    assert slow[0].run_id == "run-one" and slow[0].rows == [(250_000_000,)]
    assert answered < finished[0], "the slow query ended before the new snapshot was read"
    assert reader.run("select 1").run_id == "run-two"
    reader.close()


def test_reports_on_several_threads_share_the_connection(
    shared: tuple[SharedSnapshot, Path, Path],
) -> None:
    reader, _, _ = shared
    sql = "select sum(active_users) from marts.dau where event_date between $start and $end"

    def one(back: int) -> int:
        end = TODAY - dt.timedelta(days=back)
        rows = reader.run(sql, {"start": end - dt.timedelta(days=6), "end": end}).rows
        return int(rows[0][0])

    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(one, [back % 30 for back in range(200)]))
    assert got == [one(back % 30) for back in range(200)]
