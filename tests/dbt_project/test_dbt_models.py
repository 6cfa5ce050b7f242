"""The dbt project on a real DuckDB file: metrics, window runs, late and deleted data.

The raw messages are in raw_events.py (five UTC days, 2024-03-01 to 2024-03-05). Every test
that changes data works on its own copy of the warehouse built once by a plain `dbt build`.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
from typing import Any

import duckdb
import pytest

from common.settings import DBT_PROJECT_DIR, DEFAULT_DUCKDB_MEMORY_LIMIT, DEFAULT_DUCKDB_THREADS
from orchestration.transform.window import WINDOW_BUILD, window_env

from .conftest import BuiltWarehouse, Warehouse
from .raw_events import RAW_EVENTS, RawEvent, insert_raw_events

D1, D2, D3, D4, D5 = (dt.date(2024, 3, day) for day in range(1, 6))


def _usd_per_unit() -> dict[str, float]:
    with (DBT_PROJECT_DIR / "seeds" / "currency_rates.csv").open() as rates:
        return {row["currency"]: float(row["usd_per_unit"]) for row in csv.DictReader(rates)}


RATES = _usd_per_unit()

# Worked out by hand from the messages in raw_events.py.
EXPECTED_DAU = {
    D1: 2,  # u1 (track), a1 (page at 00:30+02:00, so 22:30 UTC on 03-01)
    D2: 2,  # u1 and u3 (orders at 20:30-05:00 and 09:00+09:00); u2 only identifies
    D3: 2,  # u1 (order, sent twice), u4 (sign-up; its retry on 03-04 is the same message)
    D4: 3,  # a2 (screen), u5 (order; its group message does not count), u6 (order)
    D5: 0,  # identify and alias only
}
EXPECTED_REVENUE = {  # event_date: (revenue_usd, orders, paying_users)
    D1: (0.0, 0, 0),
    D2: (100 * RATES["EUR"] + 15000 * RATES["JPY"], 2, 2),
    D3: (25.50, 1, 1),  # one order, although delivered twice
    D4: (0.0, 2, 2),  # an order without an amount, and one in XYZ (no rate, no revenue)
    D5: (0.0, 0, 0),
}
CURRENCY_WARNING = "test.sluice.fct_events_order_currency_has_a_usd_rate."


def dau(warehouse: Warehouse) -> dict[dt.date, int]:
    return dict(warehouse.query("select event_date, active_users from marts.dau"))


def revenue_daily(warehouse: Warehouse) -> dict[dt.date, tuple[float, int, int]]:
    rows = warehouse.query(
        "select event_date, revenue_usd, orders, paying_users from marts.revenue_daily"
    )
    return {day: (revenue, orders, payers) for day, revenue, orders, payers in rows}


def content_hash(warehouse: Warehouse, table: str, exclude: str = "") -> str:
    """A hash of a table's rows, independent of their physical order."""
    columns = f"* exclude ({exclude})" if exclude else "*"
    rows = warehouse.query(f"select {columns} from {table} order by all")
    return hashlib.sha256(repr(rows).encode()).hexdigest()


def marts_hash(warehouse: Warehouse) -> tuple[str, str]:
    return content_hash(warehouse, "marts.dau"), content_hash(warehouse, "marts.revenue_daily")


def invocations_by_day(warehouse: Warehouse) -> dict[dt.date, set[str]]:
    """The dbt invocations that wrote each day of fct_events."""
    rows = warehouse.query(
        "select event_date, list(distinct dbt_invocation_id) from core.fct_events group by all"
    )
    return {day: set(ids) for day, ids in rows}


def other_days(by_day: dict[dt.date, Any], day: dt.date) -> dict[dt.date, Any]:
    return {other: value for other, value in by_day.items() if other != day}


def window_vars(first: dt.date, last: dt.date) -> str:
    """The --vars value an orchestrator passes for the days first..last (both included)."""
    return json.dumps({"start_date": first.isoformat(), "end_date": last.isoformat()})


def assert_approx_revenue(
    actual: dict[dt.date, tuple[float, int, int]], expected: dict[dt.date, tuple[float, int, int]]
) -> None:
    assert actual.keys() == expected.keys()
    for day, (revenue, orders, payers) in expected.items():
        assert actual[day] == (pytest.approx(revenue), orders, payers), day


def test_plain_build_runs_every_model_test_and_unit_test(built_warehouse: BuiltWarehouse) -> None:
    statuses = built_warehouse.build.statuses()
    warnings = [node for node, status in statuses.items() if status == "warn"]
    # One warning: the order in XYZ, a currency without a rate.
    assert len(warnings) == 1
    assert warnings[0].startswith(CURRENCY_WARNING)
    del statuses[warnings[0]]
    assert set(statuses.values()) <= {"success", "pass"}, statuses
    unit_tests = {node for node in statuses if node.startswith("unit_test.")}
    assert len(unit_tests) == 5
    assert "test.sluice.assert_marts_reconcile_with_fct_events" in statuses
    for model in ("stg_events", "fct_events", "dau", "revenue_daily"):
        assert statuses[f"model.sluice.{model}"] == "success"


def test_a_window_build_as_sluice_runs_it_skips_only_the_unit_tests(warehouse: Warehouse) -> None:
    result = warehouse.dbt(*WINDOW_BUILD, "--vars", window_vars(D4, D4))
    assert result.returncode == 0, result.output
    statuses = result.statuses()
    assert not [node for node in statuses if node.startswith("unit_test.")]
    assert statuses["test.sluice.assert_marts_reconcile_with_fct_events"] == "pass"
    unique = "test.sluice.unique_near_window_fct_events"
    unique_ids = [node for node in statuses if node.startswith(unique)]
    assert [statuses[node] for node in unique_ids] == ["pass"]
    for model in ("stg_events", "fct_events", "dau", "revenue_daily"):
        assert statuses[f"model.sluice.{model}"] == "success"


def test_marts_match_hand_computed_metrics(built_warehouse: BuiltWarehouse) -> None:
    assert dau(built_warehouse.warehouse) == EXPECTED_DAU
    assert_approx_revenue(revenue_daily(built_warehouse.warehouse), EXPECTED_REVENUE)


def test_fct_events_has_each_message_once_on_its_utc_day(built_warehouse: BuiltWarehouse) -> None:
    rows = built_warehouse.warehouse.query(
        "select message_id, event_date, source_file from core.fct_events"
    )
    assert len(rows) == len({event.message_id for event in RAW_EVENTS})
    by_message = {message_id: (day, source) for message_id, day, source in rows}
    assert by_message["m02"][0] == D2  # 2024-03-01 20:30 -05:00
    assert by_message["m03"][0] == D1  # 2024-03-02 00:30 +02:00
    assert by_message["m05"][0] == D2  # 2024-03-02 09:00 +09:00
    # The sign-up retried after midnight keeps its first-loaded copy, on 03-03.
    assert by_message["m07"] == (D3, "landing/2024-03-04.jsonl")


def test_warehouse_has_the_documented_schemas(built_warehouse: BuiltWarehouse) -> None:
    tables = set(
        built_warehouse.warehouse.query(
            "select table_schema, table_name from information_schema.tables "
            "where table_schema <> 'raw'"
        )
    )
    assert tables == {
        ("staging", "stg_events"),
        ("staging", "stg_rejected_events"),
        ("core", "fct_events"),
        ("core", "user_active_weeks"),
        ("marts", "dau"),
        ("marts", "revenue_daily"),
        ("marts", "wau_mau"),
        ("marts", "event_counts_daily"),
        ("marts", "funnel_daily"),
        ("marts", "retention_weekly"),
        ("reference", "currency_rates"),
    }


def raw_events_row_groups(plan: Any) -> tuple[int, int]:
    """(row groups scanned, row groups in the table) of the raw.events scan in a JSON plan."""
    if isinstance(plan, dict):
        if plan.get("extra_info", {}).get("Table") == "sluice.raw.events":
            return plan["row_groups_scanned"], plan["total_row_groups_to_scan"]
        children: Any = list(plan.values())
    elif isinstance(plan, list):
        children = plan
    else:
        children = []
    for child in children:
        found = raw_events_row_groups(child)
        if found != (0, 0):
            return found
    return (0, 0)


def test_window_run_rewrites_only_its_day_and_is_idempotent(warehouse: Warehouse) -> None:
    # Half a million 2023 events that were never built: a run for 2024-03-04 must neither
    # build them nor read them.
    warehouse.execute(
        "insert into raw.events "
        '(message_id, type, event, user_id, "timestamp", _source_file, _line_number, _loaded_at) '
        "select 'bulk-' || i, 'track', 'Product Viewed', 'bulk-' || (i % 1000), "
        "timestamptz '2023-01-01 00:00:00+00' + i * interval 30 second, "
        "'landing/bulk.jsonl', i, timestamptz '2024-01-01 00:00:00+00' "
        "from range(500000) as t(i)"
    )
    before = invocations_by_day(warehouse)
    facts_before = content_hash(warehouse, "core.fct_events", exclude="dbt_invocation_id")
    marts_before = marts_hash(warehouse)

    # As Sluice's runs pass the window: in the environment.
    first = warehouse.dbt(*WINDOW_BUILD, env=window_env(D4, D4))
    assert first.returncode == 0, first.output
    after_first = invocations_by_day(warehouse)
    assert after_first.keys() == before.keys()  # no 2023 day appeared
    assert len(after_first[D4]) == 1
    assert after_first[D4] != before[D4]
    assert other_days(after_first, D4) == other_days(before, D4)
    # 03-04 holds the retry of m07, which still counts once: on 03-03, built earlier.
    assert content_hash(warehouse, "core.fct_events", exclude="dbt_invocation_id") == facts_before
    assert marts_hash(warehouse) == marts_before

    # It read the window's row groups of raw.events, not the whole history.
    compiled = (warehouse.compiled_dir / "core" / "fct_events.sql").read_text()
    plan = warehouse.query(f"explain (analyze, format json) {compiled}")[0][1]
    scanned, total = raw_events_row_groups(json.loads(plan))
    assert total >= 4
    assert scanned < total

    # As an analyst passes it by hand: as vars.
    second = warehouse.dbt("build", "--vars", window_vars(D4, D4))
    assert second.returncode == 0, second.output
    after_second = invocations_by_day(warehouse)
    assert after_second[D4] != after_first[D4]
    assert other_days(after_second, D4) == other_days(before, D4)
    assert content_hash(warehouse, "core.fct_events", exclude="dbt_invocation_id") == facts_before
    assert marts_hash(warehouse) == marts_before


def test_day_whose_raw_events_are_gone_empties_on_rebuild(warehouse: Warehouse) -> None:
    warehouse.execute('delete from raw.events where cast("timestamp" as date) = ?', [D1])
    before = invocations_by_day(warehouse)

    result = warehouse.dbt("build", "--vars", window_vars(D1, D1))
    assert result.returncode == 0, result.output

    after = invocations_by_day(warehouse)
    assert D1 not in after
    assert after == other_days(before, D1)
    assert dau(warehouse) == other_days(EXPECTED_DAU, D1)
    assert_approx_revenue(revenue_daily(warehouse), other_days(EXPECTED_REVENUE, D1))


def test_late_event_changes_only_its_day_after_a_window_run(warehouse: Warehouse) -> None:
    late_order = RawEvent(
        message_id="m14",
        type="track",
        event="Order Completed",
        user_id="u8",
        timestamp="2024-03-02 18:00:00+00:00",
        properties={"revenue": 50, "currency": "USD"},
        source_file="landing/2024-03-07.jsonl",
        line_number=1,
        loaded_at="2024-03-07 01:00:00+00:00",
    )
    insert_raw_events(warehouse.path, [late_order])
    before = invocations_by_day(warehouse)

    result = warehouse.dbt("build", "--vars", window_vars(D2, D2))
    assert result.returncode == 0, result.output

    after = invocations_by_day(warehouse)
    assert after[D2] != before[D2]
    assert other_days(after, D2) == other_days(before, D2)
    revenue, orders, payers = EXPECTED_REVENUE[D2]
    assert dau(warehouse) == {**EXPECTED_DAU, D2: EXPECTED_DAU[D2] + 1}
    assert_approx_revenue(
        revenue_daily(warehouse), {**EXPECTED_REVENUE, D2: (revenue + 50, orders + 1, payers + 1)}
    )


def test_window_with_start_after_end_is_refused(warehouse: Warehouse) -> None:
    result = warehouse.dbt("run", "--select", "fct_events", "--vars", window_vars(D3, D2))
    assert result.returncode != 0
    assert "var start_date=2024-03-03 is after var end_date=2024-03-02" in result.output

    through_env = {"SLUICE_WINDOW_START": "2024-03-03", "SLUICE_WINDOW_END": "2024-03-02"}
    result = warehouse.dbt("run", "--select", "fct_events", env=through_env)
    assert result.returncode != 0
    assert "SLUICE_WINDOW_START=2024-03-03 is after SLUICE_WINDOW_END=2024-03-02" in result.output


def test_windows_passed_in_the_environment_keep_dbts_partial_parse(warehouse: Warehouse) -> None:
    full_parse = "Unable to do partial parsing"
    first = warehouse.dbt(*WINDOW_BUILD, env=window_env(D2, D2))
    assert first.returncode == 0, first.output
    assert (warehouse.work_dir / "target" / "partial_parse.msgpack").exists()
    for day in (D3, D4):
        before = invocations_by_day(warehouse)
        result = warehouse.dbt(*WINDOW_BUILD, env=window_env(day, day))
        assert result.returncode == 0, result.output
        assert full_parse not in result.output
        after = invocations_by_day(warehouse)
        assert after[day] != before[day]
        assert other_days(after, day) == other_days(before, day)
    # Vars that change between runs make dbt parse the whole project again.
    by_vars = warehouse.dbt(*WINDOW_BUILD, "--vars", window_vars(D5, D5))
    assert by_vars.returncode == 0, by_vars.output
    assert f"{full_parse} because config vars" in by_vars.output


def _duckdb_memory_limit(warehouse: Warehouse) -> str:
    """memory_limit and threads of dbt's DuckDB session, as dbt shows them."""
    result = warehouse.dbt(
        "show",
        "--inline",
        "select current_setting('memory_limit') || ' x' || current_setting('threads') as limits",
        "--quiet",
    )
    assert result.returncode == 0, result.output
    return result.output


def _as_duckdb_shows(memory_limit: str) -> str:
    with duckdb.connect() as con:
        con.execute(f"set memory_limit = '{memory_limit}'")
        return str(con.execute("select current_setting('memory_limit')").fetchone()[0])


def test_dbt_builds_within_the_memory_limit_setting(
    warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Run by hand, without Sluice's settings, dbt falls back to Sluice's default.
    monkeypatch.delenv("SLUICE_DUCKDB_MEMORY_LIMIT", raising=False)
    monkeypatch.delenv("SLUICE_DUCKDB_THREADS", raising=False)
    default = f"{_as_duckdb_shows(DEFAULT_DUCKDB_MEMORY_LIMIT)} x{DEFAULT_DUCKDB_THREADS}"
    assert default in _duckdb_memory_limit(warehouse)
    monkeypatch.setenv("SLUICE_DUCKDB_MEMORY_LIMIT", "300MB")
    monkeypatch.setenv("SLUICE_DUCKDB_THREADS", "2")
    assert f"{_as_duckdb_shows('300MB')} x2" in _duckdb_memory_limit(warehouse)


def test_the_message_id_check_reads_the_window_and_its_lookback(warehouse: Warehouse) -> None:
    """A copy farther from the window than dedup_lookback_days is counted by design and
    outside what a window run checks; a copy near the window fails the check; two copies
    near the window but both outside it are another run's to check."""
    far = D4 - dt.timedelta(days=30)
    near = D4 - dt.timedelta(days=3)
    one = warehouse.query("select message_id from core.fct_events where event_date = ?", [D4])[0]
    before = warehouse.query("select message_id from core.fct_events where event_date = ?", [D3])

    def copy_to(day: dt.date, message_id: str = one[0], from_day: dt.date = D4) -> None:
        warehouse.execute(
            "insert into core.fct_events select * replace (cast(? as date) as event_date) "
            "from core.fct_events where message_id = ? and event_date = ?",
            [day, message_id, from_day],
        )

    def check() -> str:
        result = warehouse.dbt(
            "test", "--select", "fct_events,test_name:unique_near_window",
            "--vars", window_vars(D4, D4),
        )  # fmt: skip
        statuses = result.statuses()
        return next(v for k, v in statuses.items() if k.startswith("test.sluice.unique_near"))

    copy_to(near, before[0][0], D3)
    assert check() == "pass"
    copy_to(far)
    assert check() == "pass"
    copy_to(near)
    assert check() == "fail"


def test_column_checks_of_the_facts_read_the_window(warehouse: Warehouse) -> None:
    """A null on a day outside the window is not what a window run checks; on a day inside
    it, or in a build without a window, the check fails."""
    warehouse.execute("update core.fct_events set user_key = null where event_date = ?", [D2])

    def check(*window: str) -> str:
        result = warehouse.dbt("test", "--select", "fct_events,test_name:not_null", *window)
        statuses = result.statuses()
        return next(v for k, v in statuses.items() if ".not_null_fct_events_user_key." in k)

    assert check("--vars", window_vars(D4, D4)) == "pass"
    assert check("--vars", window_vars(D2, D2)) == "fail"
    assert check() == "fail"
    # The weekly table's checks read the weeks overlapping the window (Monday to Sunday).
    warehouse.execute(
        "update core.user_active_weeks set user_key = null where activity_week = ?",
        [D4 - dt.timedelta(days=D4.weekday())],
    )
    weekly = warehouse.dbt(
        "test", "--select", "user_active_weeks,test_name:not_null", "--vars", window_vars(D4, D4)
    )
    assert "fail" in weekly.statuses().values()
