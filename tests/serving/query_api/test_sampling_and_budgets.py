"""Cost control for exploratory queries, through a real ``sluice serve`` on 127.0.0.1: sampled
queries say what was sampled, at what rate and what was scaled, and are charged the rows they
read; a read key that overruns its budget is still answered and raises one alert to a chat
webhook on 127.0.0.1 (the next UTC day resolves it, shown with an injected clock)."""

from __future__ import annotations

import datetime as dt
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import httpx
import pytest

from common.keys import KeyStore
from common.settings import Settings, load_settings
from serving.query_api import QueryApi
from serving.sampling import Sample, sample_tables
from tests.ingestion.api.conftest import Server, free_port
from tests.receivers import Webhook
from tests.serving.query_api.conftest import (
    LIMITS,
    Clock,
    build_warehouse,
    publish,
    serve_in_thread,
)

# Enough rows for a 10% system sample to keep over 100 vectors of 2,048 rows (auto picks it).
BIG_ROWS = 2_500_000
BUDGETS = {
    "SLUICE_QUERY_SCAN_ROWS_PER_DAY": "10000000",
    "SLUICE_QUERY_BUDGETS": "analyst=3750000",
    "SLUICE_QUERY_PER_MINUTE": "100",
}


@pytest.fixture
def hook(webhook: Webhook) -> Webhook:
    return webhook


def _settings(tmp_path: Path, hook: Webhook) -> tuple[Settings, dict[str, str]]:
    env = {
        "SLUICE_DATA_DIR": str(tmp_path / "data"),
        **LIMITS,
        **BUDGETS,
        "SLUICE_REPORT_WEBHOOK_URL": hook.url,
    }
    settings = load_settings(env)
    build_warehouse(settings.warehouse_path)
    with duckdb.connect(str(settings.warehouse_path)) as con:
        con.execute(
            "create table marts.orders_big as select range as order_id, 2 as amount "
            f"from range({BIG_ROWS})"
        )
    publish(settings, "run-one")
    return settings, env


@pytest.fixture
def served(tmp_path: Path, hook: Webhook) -> Iterator[tuple[Server, KeyStore]]:
    settings, env = _settings(tmp_path, hook)
    server = Server(
        settings, free_port(), {**os.environ, **settings.subprocess_env(), **env}, tmp_path / "log"
    )
    server.start()
    try:
        yield server, KeyStore(settings.api_keys_path)
    finally:
        server.stop(signal.SIGKILL)


def _ask(url: str, key: str, **body: object) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"}
    return httpx.post(f"{url}/v1/query", json=body, headers=headers, timeout=30)


def test_a_sampled_query_says_what_it_sampled_and_scaled_and_is_charged_what_it_read(
    served: tuple[Server, KeyStore],
) -> None:
    server, keys = served
    key = keys.create("explorer", kind="read")
    sql = (
        "select count(*) as orders, sum(amount) as amount, avg(amount) as mean "
        "from marts.orders_big"
    )

    full = _ask(server.url, key, sql=sql).json()
    assert full["rows"] == [[BIG_ROWS, 2 * BIG_ROWS, 2.0]]
    assert full["sampled"] is None and full["scanned_rows"] == BIG_ROWS

    answer = _ask(server.url, key, sql=sql, sample=0.1, scale=["orders", "amount"])
    assert answer.status_code == 200, answer.text
    body = answer.json()
    sampled = body["sampled"]
    assert sampled["rate"] == 0.1 and sampled["method"] == "auto"
    assert sampled["tables"] == [
        {"table": "marts.orders_big", "method": "system", "rows": BIG_ROWS}
    ]
    assert sampled["scale_factor"] == 10 and sampled["scaled_columns"] == ["orders", "amount"]
    assert "multiplied by 10 (1 / rate)" in sampled["note"]
    [[orders, amount, mean]] = body["rows"]
    # Whole vectors of 2,048 rows are kept: about a tenth of them, scaled back up.
    assert 0.7 * BIG_ROWS < orders < 1.3 * BIG_ROWS and amount == 2 * orders
    assert mean == 2.0  # a mean is not scaled
    # System sampling reads about the rate's share of the rows, and is charged that.
    assert body["scanned_rows"] == BIG_ROWS // 10
    assert body["budget"]["scanned_rows_today"] == BIG_ROWS + BIG_ROWS // 10

    # The same request gets the same rows (a fixed seed), from the cache.
    again = _ask(server.url, key, sql=sql, sample=0.1, scale=["orders", "amount"]).json()
    assert again["rows"] == body["rows"] and again["cached"] is True

    # Bernoulli keeps rows one by one, but reads them all: charged in full. Unscaled counts
    # are the sample's own, and the answer says so.
    rows = _ask(
        server.url,
        key,
        sql="select count(*) as n from marts.orders_big",
        sample=0.01,
        sample_method="bernoulli",
    ).json()
    assert 0.009 * BIG_ROWS < rows["rows"][0][0] < 0.011 * BIG_ROWS
    assert rows["scanned_rows"] == BIG_ROWS
    assert rows["sampled"]["scale_factor"] is None
    assert "no column was scaled" in rows["sampled"]["note"]

    # A mart of 60 rows is one vector: auto samples it row by row, and reads it all.
    small = _ask(
        server.url, key, sql="select count(*) as days from marts.dau", sample=0.5, scale=["days"]
    ).json()
    assert small["sampled"]["tables"] == [{"table": "marts.dau", "method": "bernoulli", "rows": 60}]
    assert 10 < small["rows"][0][0] < 110 and small["rows"][0][0] % 2 == 0
    assert small["scanned_rows"] == 60


BAD_FIELDS = [
    ({"sample": 1.5}, '"sample" must be at least 0.0001 and below 1'),
    ({"sample": "10%"}, '"sample" must be a number'),
    ({"sample": 0.1, "sample_method": "reservoir"}, '"sample_method" must be one of'),
    ({"scale": ["n"]}, '"scale" needs "sample"'),
    ({"sample": 0.1, "scale": ["nope"]}, "the column 'nope', which the result does not have"),
    (
        {
            "sample": 0.1,
            "scale": ["n"],
            "sql": "select count(*) as n from marts.dau join marts.revenue_daily "
            "using (event_date)",
        },
        '"scale" needs a query that reads one table; this one samples 2 (marts.dau, '
        "marts.revenue_daily)",
    ),
]


def test_bad_sampling_fields_are_refused_naming_the_field(
    served: tuple[Server, KeyStore],
) -> None:
    server, keys = served
    key = keys.create("careless", kind="read")
    for body, says in BAD_FIELDS:
        sent = {"sql": "select count(*) as n from marts.dau", **body}
        answer = _ask(server.url, key, **sent)
        assert answer.status_code == 400, answer.text
        assert says in answer.json()["error"]


def test_only_the_tables_of_the_marts_are_sampled_not_ctes_nor_metadata() -> None:
    sql = (
        "with recent as (select * from marts.dau where event_date > $start) "
        "select count(*) from recent join marts.revenue_daily using (event_date) "
        "where exists (select 1 from information_schema.tables)"
    )
    sampled, tables = sample_tables(sql, Sample(0.25, "bernoulli"))
    assert [table.name for table in tables] == ["marts.dau", "marts.revenue_daily"]
    assert sampled.count("TABLESAMPLE") == 2 and "$start" in sampled
    assert "recent TABLESAMPLE" not in sampled


def _wait_for(hook: Webhook, count: int, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while len(hook.posts) < count and time.monotonic() < deadline:
        time.sleep(0.05)


def test_a_key_over_its_budget_is_answered_and_raises_one_alert(
    served: tuple[Server, KeyStore], hook: Webhook
) -> None:
    server, keys = served
    analyst, other = keys.create("analyst", kind="read"), keys.create("other", kind="read")
    # count(*) alone is read from the table's statistics: a sum reads every row.
    first = _ask(server.url, analyst, sql="select sum(order_id) from marts.orders_big").json()
    assert first["budget"] == {
        "scanned_rows_today": BIG_ROWS,
        "budget_rows_per_day": 3_750_000,
        "quota_rows_per_day": 10_000_000,
        "over_budget": False,
    }
    second = _ask(server.url, analyst, sql="select sum(order_id) + 1 from marts.orders_big")
    assert second.status_code == 200 and second.json()["budget"]["over_budget"] is True
    _wait_for(hook, 1)
    [alert] = hook.texts()
    assert alert.startswith(
        "Sluice read key 'analyst' overran its query budget: 5,000,000 rows scanned on "
    )
    assert "over its budget of 3,750,000 a day (SLUICE_QUERY_BUDGETS)" in alert
    assert hook.posts[0]["blocks"][0]["text"]["text"] == "FIRING: query_budget/analyst"

    # More queries over the budget, and another key under its own (the global default):
    # nothing more is sent.
    assert _ask(
        server.url, analyst, sql="select sum(order_id) + 2 from marts.orders_big"
    ).is_success
    other_answer = _ask(server.url, other, sql="select sum(amount) from marts.orders_big").json()
    assert other_answer["budget"]["budget_rows_per_day"] == 800_000_000
    time.sleep(0.5)
    assert len(hook.posts) == 1


def test_the_next_utc_day_resolves_a_budget_alert(tmp_path: Path, hook: Webhook) -> None:
    settings, _env = _settings(tmp_path, hook)
    keys = KeyStore(settings.api_keys_path)
    analyst = keys.create("analyst", kind="read")
    evening = dt.datetime.combine(dt.date(2026, 3, 10), dt.time(23), dt.UTC).timestamp()
    clock = Clock(evening)
    with serve_in_thread(QueryApi(settings, keys, clock=clock)) as url:
        for n in range(2):
            assert _ask(
                url, analyst, sql=f"select {n}, sum(amount) from marts.orders_big"
            ).is_success
        _wait_for(hook, 1)
        clock.now += 2 * 3600  # 01:00 the next day
        answer = _ask(url, analyst, sql="select 2, sum(amount) from marts.orders_big").json()
        assert answer["budget"]["scanned_rows_today"] == BIG_ROWS
        _wait_for(hook, 2)
    assert [text.split(":")[0] for text in hook.texts()] == [
        "Sluice read key 'analyst' overran its query budget",
        "Sluice read key 'analyst' is within its query budget again",
    ]
    assert "a new UTC day (2026-03-11). It fired at 2026-03-10 23:00:00 UTC" in hook.texts()[1]
