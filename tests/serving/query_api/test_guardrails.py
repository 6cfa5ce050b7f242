"""The pieces of the guardrails that need no server: DuckDB's parser decides what a
statement is, and approx rewrites distinct counts on the syntax tree, not the text."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from serving.guardrails import (
    QueryLimits,
    QueryRefused,
    approximate_distinct,
    check_select,
    run_isolated,
)


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
        run_isolated(tmp_path / "none.duckdb", "select 1", QueryLimits())
