"""The query API as a client meets it: a real ``sluice serve`` on 127.0.0.1 (conftest.py)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json

import httpx
import pytest

from tests.ingestion.api.conftest import Server
from tests.serving.query_api.conftest import FIRST, IGNORES_INTERRUPT, TODAY, Keys, publish


def query(client: httpx.Client, sql: str, **extra: object) -> httpx.Response:
    return client.post("/v1/query", json={"sql": sql, **extra})


def assert_alive(client: httpx.Client) -> None:
    answer = query(client, "select count(*) as days from marts.dau")
    assert answer.status_code == 200, answer.text
    assert answer.json()["rows"] == [[60]]


@pytest.mark.parametrize(
    ("sql", "status", "limit"),
    [
        ("select * from read_csv('/etc/passwd')", 403, "external_access"),
        ("select * from read_text('/etc/hostname')", 403, "external_access"),
        ("select * from glob('/*')", 403, "external_access"),
        ("select * from read_parquet('http://127.0.0.1:9/x.parquet')", 403, "external_access"),
        ("attach '/tmp/other.duckdb' as other", 400, "statement"),
        ("copy (select * from marts.dau) to '/tmp/dau.csv'", 400, "statement"),
        ("copy marts.dau from '/etc/passwd'", 400, "statement"),
        ("install httpfs", 400, "statement"),
        ("load httpfs", 400, "statement"),
        ("set enable_external_access = true", 400, "statement"),
        ("pragma enable_profiling", 400, "statement"),
        ("create table marts.evil (a int)", 400, "statement"),
        ("drop table marts.dau", 400, "statement"),
        ("delete from marts.dau", 400, "statement"),
        ("update marts.dau set active_users = 0", 400, "statement"),
        ("select 1; select 2", 400, "statement"),
        ("select 1; drop table marts.dau", 400, "statement"),
        ("select from where", 400, "syntax"),
        ("select * from query('copy (select 1) to ''/tmp/q.csv''')", 400, "query_error"),
        ("select * from query('set lock_configuration = false')", 400, "query_error"),
        ("select count(*) from range(100000000)", 413, "scan_limit"),
        ("select count(*) from marts.dau, range(1000000)", 413, "scan_limit"),
        ("select length(repeat('x', 4000000000))", 413, "memory"),
        ("select repeat('x', 10000000) from range(100)", 413, "memory"),
        (
            "with recursive forever(n) as (select 1 union all select n + 1 from forever) "
            "select count(*) from forever",
            408,
            "timeout",
        ),
    ],
)
def test_a_query_outside_the_guardrails_is_refused_naming_the_limit(
    client: httpx.Client, sql: str, status: int, limit: str
) -> None:
    answer = query(client, sql)
    assert answer.status_code == status, answer.text
    assert answer.json()["limit"] == limit
    assert answer.json()["error"]
    # Stopped by DuckDB's interrupt: its worker lives on.
    assert "killed" not in answer.json()["error"]
    assert_alive(client)


def test_a_query_that_ignores_the_interrupt_has_its_process_killed(client: httpx.Client) -> None:
    answer = query(client, IGNORES_INTERRUPT)
    # The query needs about 0.5 GB; now and then the worker's address-space cap (2 GB, which
    # the allocator's per-thread arenas count too) refuses it first, a correct answer of
    # another limit. Ask again: the kill is what this test is about, and it must happen.
    for _ in range(2):
        if answer.json().get("limit") != "memory":
            break
        answer = query(client, IGNORES_INTERRUPT)
    assert answer.status_code == 408, answer.text
    assert answer.json()["limit"] == "timeout"
    assert "ignored the interrupt, and its process was killed" in answer.json()["error"]
    assert_alive(client)


def test_a_query_answers_rows_up_to_the_row_limit(client: httpx.Client) -> None:
    answer = query(
        client,
        f"select event_date, active_users from marts.dau where event_date >= date '{TODAY}' - 2 "
        "order by event_date",
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["columns"] == ["event_date", "active_users"]
    assert [row[0] for row in body["rows"]] == [
        str(TODAY - dt.timedelta(days=back)) for back in (2, 1, 0)
    ]
    assert body["truncated"] is False

    cut = query(client, "select * from range(5000)").json()
    assert cut["truncated"] is True and len(cut["rows"]) == cut["max_rows"] == 1000


def test_approx_swaps_distinct_counts_for_hyperloglog(client: httpx.Client) -> None:
    sql = "select count(distinct active_users) as users from marts.dau"
    exact = query(client, sql).json()
    approx = query(client, sql, approx=True).json()
    assert exact["rows"] == [[60]] and exact["approx"] is False
    assert approx["approx"] is True and abs(approx["rows"][0][0] - 60) <= 6


def test_write_keys_cannot_read_and_read_keys_cannot_write(
    query_server: Server, keys: Keys
) -> None:
    write_key, read_key = keys.write(), keys.read()
    with httpx.Client(base_url=query_server.url, timeout=30) as http:
        as_writer = {"Authorization": f"Bearer {write_key}"}
        refused = http.post("/v1/query", json={"sql": "select 1"}, headers=as_writer)
        assert refused.status_code == 403 and "write key" in refused.json()["error"]
        assert http.get("/v1/reports", headers=as_writer).status_code == 403
        assert http.get("/v1/reports").status_code == 401
        unknown = http.get("/v1/reports", headers={"Authorization": "Bearer sk_nope"})
        assert unknown.status_code == 401

        event = {"userId": "u1", "event": "Order Completed", "properties": {"revenue": 1}}
        tracked = http.post("/v1/track", json=event, auth=(read_key, ""))
        assert tracked.status_code == 403 and "read key" in tracked.text
        assert http.post("/v1/track", json=event, auth=(write_key, "")).status_code == 200
        as_reader = {"Authorization": f"Bearer {read_key}"}
        assert http.get("/v1/reports", headers=as_reader).status_code == 200


def test_reports_are_listed_and_answer_json_or_csv(client: httpx.Client) -> None:
    listed = client.get("/v1/reports").json()["reports"]
    names = {report["name"] for report in listed}
    assert {"daily_summary", "signup_funnel", "active_users", "weekly_retention"} <= names

    end = TODAY - dt.timedelta(days=1)
    start = end - dt.timedelta(days=6)
    params = {"start": str(start), "end": str(end)}
    body = client.get("/v1/reports/daily_summary", params=params).json()
    assert body["columns"] == ["event_date", "active_users", "orders", "revenue_usd"]
    assert [row[0] for row in body["rows"]] == [str(start + dt.timedelta(days=i)) for i in range(7)]
    first_users = 100 + 3 * (start - FIRST).days
    assert body["rows"][0][1:] == [first_users, first_users // 10, first_users * 1.5]

    as_csv = client.get("/v1/reports/daily_summary", params={**params, "format": "csv"})
    assert as_csv.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert [r["event_date"] for r in rows] == [row[0] for row in body["rows"]]

    missing = client.get("/v1/reports/nope")
    assert missing.status_code == 404 and missing.json()["limit"] == "report"
    bad = client.get("/v1/reports/daily_summary", params={"start": "yesterday"})
    assert bad.status_code == 400 and bad.json()["limit"] == "parameters"


def test_results_are_cached_until_a_new_snapshot(
    query_server: Server, client: httpx.Client
) -> None:
    params = {"start": str(FIRST), "end": str(TODAY - dt.timedelta(days=1))}
    first = client.get("/v1/reports/active_users", params=params)
    second = client.get("/v1/reports/active_users", params=params)
    assert first.headers["x-sluice-cache"] == "miss" and first.json()["cached"] is False
    assert second.headers["x-sluice-cache"] == "hit" and second.json()["cached"] is True
    assert second.json()["rows"] == first.json()["rows"]
    assert first.json()["snapshot"]["run_id"] == "run-one"

    publish(query_server.settings, "run-two")
    third = client.get("/v1/reports/active_users", params=params)
    assert third.headers["x-sluice-cache"] == "miss"
    assert third.json()["snapshot"]["run_id"] == "run-two"
    assert client.get("/v1/reports/active_users", params=params).json()["cached"] is True


def test_quotas_per_key_per_minute_and_rows_per_day(
    query_server: Server, client: httpx.Client, keys: Keys
) -> None:
    big = "select count(*) from range(2000000)"
    assert query(client, big).status_code == 200
    assert query(client, big + " where true").status_code == 200
    over = query(client, "select 1")
    assert over.status_code == 429 and over.json()["limit"] == "rows_scanned_per_day"

    with httpx.Client(base_url=query_server.url, timeout=30) as http:
        http.headers["Authorization"] = f"Bearer {keys.read()}"
        answers = [http.get("/v1/reports").status_code for _ in range(40)]
        assert answers == [200] * 40
        refused = http.post("/v1/query", json={"sql": "select 1"})
        assert refused.status_code == 429 and refused.json()["limit"] == "queries_per_minute"


def test_metrics_show_latency_cache_refusals_and_snapshot_age(
    query_server: Server, client: httpx.Client
) -> None:
    query(client, "select 42")
    query(client, "select 42")
    query(client, "drop table marts.dau")
    text = httpx.get(f"{query_server.url}/metrics").text
    assert "sluice_api_messages_accepted_total" in text  # the ingest API's own, still there
    assert "sluice_query_duration_seconds_count" in text
    assert 'sluice_query_cache_requests_total{result="hit"}' in text
    assert "sluice_query_cache_hit_ratio" in text
    assert 'sluice_query_refusals_total{limit="statement"}' in text
    age = next(
        line for line in text.splitlines() if line.startswith("sluice_serving_snapshot_age_seconds")
    )
    assert 0 <= float(age.split()[1]) < 3600


def test_the_access_log_names_the_key_never_the_sql(
    query_server: Server, client: httpx.Client
) -> None:
    assert query(client, "select 'secret-literal-42' as s").status_code == 200
    assert query(client, "drop table marts.dau").status_code == 400
    lines = [
        json.loads(line)
        for line in query_server.log_path.read_text().splitlines()
        if line.startswith("{") and '"/v1/query"' in line
    ]
    assert "secret-literal-42" not in query_server.log_path.read_text()
    ok, refused = lines[-2:]
    assert ok["status"] == 200 and ok["reader"].startswith("reader-") and ok["rows"] == 1
    assert len(ok["sql_sha256"]) == 16
    assert refused["status"] == 400 and refused["limit"] == "statement"
