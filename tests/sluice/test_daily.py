"""``GET /v1/daily`` on a real ``sluice serve``: built days from the marts of the serving
snapshot, today (and days not built yet) from the real-time tier, each labelled."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import httpx

from common.keys import KeyStore
from serving.snapshot import publish_snapshot
from tests.ingestion.api.conftest import Server, iso, make_server  # noqa: F401  (a fixture)
from tests.serving import fake_marts
from tests.serving.fake_marts import FakeMarts

SLUICE = str(Path(sys.executable).with_name("sluice"))


def _events(day: dt.datetime, count: int, first: int) -> list[dict[str, Any]]:
    """``count`` events at ``day``; every fourth an order of 10 USD; 5 users."""
    messages = []
    for n in range(first, first + count):
        message: dict[str, Any] = {"type": "track", "userId": f"u-{n % 5}"}
        message |= {"timestamp": iso(day + dt.timedelta(seconds=n)), "messageId": f"d-{n}"}
        message["event"] = "Order Completed" if n % 4 == 0 else "Feature Used"
        if n % 4 == 0:
            message["properties"] = {"revenue": 10, "currency": "USD"}
        messages.append(message)
    return messages


def test_built_days_come_from_the_marts_and_the_rest_from_the_real_time_tier(
    make_server,  # type: ignore[no-untyped-def]  # noqa: F811
) -> None:
    now = dt.datetime.now(dt.UTC)
    today = now.date()
    two_days_ago = today - dt.timedelta(days=2)
    # The lateness covers yesterday, so none of these events is late.
    server: Server = make_server(two_days_ago, SLUICE_REALTIME_LATENESS_SECONDS="172800")
    read_key = KeyStore(server.settings.api_keys_path).create("screen", kind="read")
    write_key = server.create_key("web")
    reader = httpx.Client(base_url=server.url, auth=(read_key, ""), timeout=30)

    # Neither tier has anything: a 503 that says what to run.
    answer = reader.get("/v1/daily")
    assert answer.status_code == 503 and "sluice stream" in answer.json()["error"]

    # The marts hold the days up to two days ago; yesterday is not built yet.
    marts = FakeMarts(days=10, last=two_days_ago)
    fake_marts.build_warehouse(server.settings.warehouse_path, marts)
    with duckdb.connect(str(server.settings.warehouse_path), read_only=True) as con:
        dau = dict(con.sql("select event_date::varchar, active_users from marts.dau").fetchall())
    publish_snapshot(server.settings.warehouse_path, server.settings.serving_path, "run-daily")
    midnight = dt.datetime.combine(today, dt.time(), dt.UTC)
    yesterday_events = _events(midnight - dt.timedelta(hours=12), 12, 0)
    today_events = _events(max(midnight, now - dt.timedelta(minutes=2)), 8, 100)
    with httpx.Client(base_url=server.url, auth=(write_key, "")) as client:
        batch = yesterday_events + today_events
        assert client.post("/v1/batch", json={"batch": batch}).json()["accepted"] == 20
    subprocess.run([SLUICE, "stream", "--once"], env=server.env, check=True, timeout=60)

    answer = reader.get("/v1/daily", params={"days": 5})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    days = {row["date"]: row for row in body["days"]}
    assert list(days) == [(today - dt.timedelta(days=n)).isoformat() for n in (4, 3, 2, 1, 0)]
    assert body["snapshot_run_id"] == "run-daily"
    assert set(body["sources"]) == {"marts", "real-time tier"}

    # Built days: the marts' own figures, final.
    for n in (4, 3, 2):
        day = (today - dt.timedelta(days=n)).isoformat()
        row = days[day]
        assert (row["source"], row["final"]) == ("marts", True)
        assert row["active_users"] == dau[day] > 0
    # Yesterday and today: the real-time tier's, not final.
    for day, sent in ((today - dt.timedelta(days=1), yesterday_events), (today, today_events)):
        row = days[day.isoformat()]
        assert (row["source"], row["final"]) == ("real-time tier", False)
        orders = [m for m in sent if m["event"] == "Order Completed"]
        assert (row["events"], row["orders"]) == (len(sent), len(orders))
        assert row["revenue_usd"] == 10 * len(orders)
        assert round(row["active_users"]) == len({m["userId"] for m in sent})

    # Parameters and keys, as the other read routes.
    for bad in ("0", "91", "week"):
        answer = reader.get("/v1/daily", params={"days": bad})
        assert answer.status_code == 400 and answer.json()["limit"] == "parameters"
    answer = httpx.get(f"{server.url}/v1/daily", auth=(write_key, ""))
    assert answer.status_code == 403
    # The default, 14 days: the 10 built, yesterday and today.
    assert len(reader.get("/v1/daily").json()["days"]) == 12
    reader.close()


def test_today_alone_from_the_real_time_tier(make_server) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    server: Server = make_server()
    read_key = KeyStore(server.settings.api_keys_path).create("screen", kind="read")
    write_key = server.create_key("web")
    now = dt.datetime.now(dt.UTC)
    with httpx.Client(base_url=server.url, auth=(write_key, "")) as client:
        client.post("/v1/batch", json={"batch": _events(now - dt.timedelta(seconds=30), 4, 0)})
    subprocess.run([SLUICE, "stream", "--once"], env=server.env, check=True, timeout=60)
    body = httpx.get(f"{server.url}/v1/daily?days=1", auth=(read_key, "")).json()
    assert [(r["date"], r["source"], r["events"]) for r in body["days"]] == [
        (now.date().isoformat(), "real-time tier", 4)
    ]
    assert body["snapshot_run_id"] is None
