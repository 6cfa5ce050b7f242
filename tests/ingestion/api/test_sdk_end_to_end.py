"""The official Segment SDK against ``sluice serve``, through the load, to the marts."""

from __future__ import annotations

import datetime as dt

import duckdb
import httpx
import pytest
from segment.analytics import Client

from sluice.runs import materialize_range, run_job
from tests.ingestion.api.conftest import Server

pytestmark = pytest.mark.slow


def test_segment_sdk_events_reach_dau_and_revenue(make_server) -> None:  # type: ignore[no-untyped-def]
    day = dt.date.today() - dt.timedelta(days=1)
    server: Server = make_server(day)
    key = server.create_key("mobile")
    noon = dt.datetime.combine(day, dt.time(12), tzinfo=dt.UTC)
    client = Client(key, host=server.url, gzip=True, max_retries=3, upload_size=50)
    failures: list[object] = []
    client.on_error = lambda error, batch: failures.append(error)
    for n in range(20):
        user = f"user-{n}"
        client.identify(user, {"plan": "pro"}, timestamp=noon)
        client.page(user, "Docs", "Getting started", timestamp=noon)
        client.track(user, "Feature Used", {"feature": "export"}, timestamp=noon)
    for n in range(5):
        client.track(
            f"user-{n}",
            "Order Completed",
            {"revenue": 10.5, "currency": "USD"},
            timestamp=noon + dt.timedelta(minutes=n),
        )
    client.flush()
    client.shutdown()
    assert failures == []
    # One bad message beside the SDK's traffic: it must end in quarantine, not be lost.
    bad = {"batch": [{"type": "track", "userId": "user-1", "timestamp": noon.isoformat()}]}
    assert httpx.post(f"{server.url}/v1/batch", json=bad, auth=(key, "")).json()["rejected"] == 1
    server.stop()  # closes the open segment so the load picks it up

    assert run_job(server.settings, "load").success
    outcome = materialize_range(server.settings, day, day)
    assert outcome.success, outcome.message

    with duckdb.connect(str(server.settings.warehouse_path), read_only=True) as con:
        dau = con.execute(
            "select active_users from marts.dau where event_date = ?", [day]
        ).fetchone()
        revenue = con.execute(
            "select revenue_usd, orders, paying_users from marts.revenue_daily "
            "where event_date = ?",
            [day],
        ).fetchone()
        sources = con.execute("select distinct _source from raw.events").fetchall()
        rejected = con.execute("select _source, reason from raw.rejected_events").fetchall()
    assert dau == (20,)
    assert revenue == (pytest.approx(52.5), 5, 5)
    assert sources == [("mobile",)]
    assert rejected == [("mobile", "track message without event")]
