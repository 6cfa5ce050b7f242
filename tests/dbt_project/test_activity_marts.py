"""wau_mau, funnel_daily, event_counts_daily and retention_weekly on real dbt and DuckDB.

The rolling and funnel marts replace more days than the run's window (see their models);
these tests check that window runs after late events leave them exactly as a full rebuild
would, and that a run reads a bounded window of fct_events.
"""

from __future__ import annotations

import datetime as dt
import json

from .conftest import BuiltWarehouse, Warehouse
from .raw_events import RawEvent, insert_raw_events

D1, D2, D3, D4, D5 = (dt.date(2024, 3, day) for day in range(1, 6))
MARTS = ("wau_mau", "event_counts_daily", "funnel_daily", "retention_weekly")


def window_vars(first: dt.date, last: dt.date) -> str:
    return json.dumps({"start_date": first.isoformat(), "end_date": last.isoformat()})


def snapshot(warehouse: Warehouse) -> dict[str, list[tuple]]:
    return {name: warehouse.query(f"select * from marts.{name} order by all") for name in MARTS}


def late(message_id: str, **fields: str) -> RawEvent:
    return RawEvent(
        message_id=message_id,
        type="track",
        source_file="landing/2024-03-07.jsonl",
        line_number=int(message_id[1:]),
        loaded_at="2024-03-07 01:00:00+00:00",
        **fields,
    )


def test_a_full_build_gives_the_hand_computed_activity(built_warehouse: BuiltWarehouse) -> None:
    warehouse = built_warehouse.warehouse
    # Active: 03-01 u1 a1; 03-02 u1 u3; 03-03 u1 u4; 03-04 a2 u5 u6; 03-05 nobody.
    assert warehouse.query("select * from marts.wau_mau order by event_date") == [
        (D1, 2, 2, 2, 1.0),
        (D2, 2, 3, 3, 2 / 3),
        (D3, 2, 4, 4, 0.5),
        (D4, 3, 7, 7, 3 / 7),
        (D5, 0, 7, 7, 0.0),
    ]
    assert warehouse.query("select * from marts.funnel_daily") == [(D3, 1, 0, 0)]
    # 2024-02-26 and 2024-03-04 are Mondays: u1 a1 u3 u4 first in week 0, a2 u5 u6 in week 1.
    monday = dt.date(2024, 2, 26)
    assert warehouse.query("select * from marts.retention_weekly order by all") == [
        (monday, 0, 4, 4, 1.0),
        (monday, 1, 4, 0, 0.0),
        (D4, 0, 3, 3, 1.0),
    ]
    counts = warehouse.query(
        "select event_type, event_name, events, users from marts.event_counts_daily "
        "where event_date = ? order by all",
        [D4],
    )
    assert counts == [
        ("group", None, 1, 1),
        ("screen", "Settings", 1, 1),
        ("track", "Order Completed", 2, 2),
    ]


def test_window_runs_after_late_events_equal_a_full_rebuild(warehouse: Warehouse) -> None:
    insert_raw_events(
        warehouse.path,
        [
            # A new user active on 03-02: wau and mau of 03-02 .. 03-05 grow.
            late("m20", event="Product Viewed", user_id="u9", timestamp="2024-03-02 12:00:00+00"),
            # u4 signed up on 03-03 at 23:59; a feature and an order on 03-04 complete its
            # funnel, so the run for 03-04 must rebuild the 03-03 cohort.
            late("m21", event="Feature Used", user_id="u4", timestamp="2024-03-04 10:00:00+00"),
            late("m22", event="Order Completed", user_id="u4", timestamp="2024-03-04 11:00:00+00"),
        ],
    )
    for day in (D2, D4):  # what the late-events sensor starts: one run per touched day
        result = warehouse.dbt("build", "--vars", window_vars(day, day))
        assert result.returncode == 0, result.output
    after_window_runs = snapshot(warehouse)

    assert after_window_runs["funnel_daily"] == [(D3, 1, 1, 1)]
    assert [row[:4] for row in after_window_runs["wau_mau"]] == [
        (D1, 2, 2, 2),
        (D2, 3, 4, 4),
        (D3, 2, 5, 5),
        (D4, 4, 8, 8),
        (D5, 0, 8, 8),
    ]
    # Each run read a bounded window of fct_events: 27 days back and 27 ahead for wau_mau.
    compiled = (warehouse.compiled_dir / "marts" / "wau_mau.sql").read_text()
    assert "event_date >= cast('2024-02-06' as date)" in compiled  # 03-04 - 27 days
    assert "event_date <= cast('2024-03-31' as date)" in compiled  # 03-04 + 27 days

    full = warehouse.dbt("build", "--full-refresh")
    assert full.returncode == 0, full.output
    assert snapshot(warehouse) == after_window_runs
