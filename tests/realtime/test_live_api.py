"""``GET /v1/live`` on a real ``sluice serve``: events sent over HTTP, folded by
``sluice stream --once``, answered with the figures ``realtime.read`` gives and an
independent count of what was sent; read keys only; a 503 before any stream ran."""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from common.keys import KeyStore
from realtime import read
from tests.ingestion.api.conftest import Server, iso
from tests.realtime.conftest import expected_windows

SLUICE = str(Path(sys.executable).with_name("sluice"))
SOURCE = "real-time tier (sluice stream)"


def _at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def _events(now: dt.datetime) -> list[dict[str, Any]]:
    """Oldest first, one to four a minute over the last 20 minutes; every third an order."""
    messages: list[dict[str, Any]] = []
    for minute in range(20, -1, -1):
        for n in range(1 + minute % 4):
            index = len(messages)
            message: dict[str, Any] = {
                "type": "track" if index % 5 else "page",
                "userId": f"user-{index % 11}",
                "timestamp": iso(now - dt.timedelta(minutes=minute, seconds=n)),
                "messageId": f"live-{index}",
            }
            if message["type"] == "track":
                message["event"] = "Order Completed" if index % 3 == 0 else "Feature Used"
            if message.get("event") == "Order Completed":
                message["properties"] = {"revenue": 10 + index, "currency": "USD"}
            messages.append(message)
    return messages


def test_live_figures_follow_the_stream(make_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # A lateness of an hour, so none of the last 20 minutes is late, and one event of 2 hours
    # ago is.
    server: Server = make_server(SLUICE_REALTIME_LATENESS_SECONDS="3600")
    write_key = server.create_key("web")
    read_key = KeyStore(server.settings.api_keys_path).create("screen", kind="read")
    live = f"{server.url}/v1/live"

    # Keys: none, a write key, an unknown one.
    answer = httpx.get(live)
    assert answer.status_code == 401 and answer.json()["limit"] == "read_key"
    answer = httpx.get(live, headers={"Authorization": f"Bearer {write_key}"})
    assert answer.status_code == 403 and "write key" in answer.json()["error"]
    answer = httpx.get(live, auth=("sk_nothing", ""))
    assert answer.status_code == 401
    reader = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {read_key}"})

    # Before any `sluice stream`: a 503 that says what to run, naming no folder.
    answer = reader.get("/v1/live")
    assert answer.status_code == 503
    assert "sluice stream" in answer.json()["error"]
    assert str(tmp_path) not in answer.text and "windows.sqlite" not in answer.text

    now = dt.datetime.now(dt.UTC)
    sent = _events(now)
    late = {"type": "track", "event": "Feature Used", "userId": "user-late"}
    late |= {"timestamp": iso(now - dt.timedelta(hours=2)), "messageId": "live-late"}
    invalid = {"type": "shout", "userId": "user-1", "messageId": "live-invalid"}
    with httpx.Client(base_url=server.url, auth=(write_key, "")) as client:
        assert client.post("/v1/batch", json={"batch": sent}).json()["accepted"] == len(sent)
        client.post("/v1/batch", json={"batch": [sent[1]]})  # a client's retry
        assert client.post("/v1/track", json=late).status_code == 200
        client.post("/v1/batch", json={"batch": [invalid]})
    subprocess.run([SLUICE, "stream", "--once"], env=server.env, check=True, timeout=60)

    answer = reader.get("/v1/live", params={"minutes": 30})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["source"] == SOURCE
    asked = _at(body["now"])
    assert now <= asked < now + dt.timedelta(seconds=60)
    store = server.settings.realtime_store_path

    # Per minute: 30 minutes ending with the one under way, zeros included; as read.py says.
    minutes = body["minutes"]
    starts = [_at(row["start"]) for row in minutes]
    current = asked.replace(second=0, microsecond=0)
    assert len(minutes) == 30 and starts[-1] == current
    assert starts == [current - dt.timedelta(minutes=29 - n) for n in range(30)]
    by_read = {
        f.start: f for f in read.windows(store, starts[0], current + dt.timedelta(minutes=1))
    }
    expected = expected_windows(sent)
    for row, start in zip(minutes, starts, strict=True):
        figures = by_read.get(start)
        events = sum(n for (minute, _name), n in expected.events.items() if minute == start)
        assert row["events"] == events == (figures.events if figures else 0), start
        assert row["orders"] == expected.orders.get(start, 0)
        assert abs(row["revenue_usd"] - expected.revenue.get(start, 0.0)) < 1e-9
        assert row["active_users"] == (figures.active_users if figures else 0.0)
        assert round(row["active_users"]) == len(expected.users.get(start, ()))
    assert sum(row["events"] for row in minutes) == len(sent)

    # The last 5 minutes: each user once.
    last_five = current - dt.timedelta(minutes=4)
    users = {u for minute, us in expected.users.items() if minute >= last_five for u in us}
    total = read.total(store, last_five, current + dt.timedelta(minutes=1))
    assert body["active_users_5_minutes"] == total.active_users
    assert round(body["active_users_5_minutes"]) == len(users) > 0

    # Today so far (UTC): what was sent today, as read.py says.
    today = body["today"]
    assert today["date"] == asked.date().isoformat()
    todays = [m for m in sent if _at(m["timestamp"]).date() == asked.date()]
    assert today["events"] == len(todays) == read.today_so_far(store, asked).events
    orders = [m for m in todays if m.get("event") == "Order Completed"]
    assert today["orders"] == len(orders)
    assert today["revenue_usd"] == sum(m["properties"]["revenue"] for m in orders)
    assert round(today["active_users"]) == len({m["userId"] for m in todays})

    # The newest event time and the worker's counters.
    newest = max(_at(m["timestamp"]) for m in sent)
    assert abs(_at(body["newest_event_at"]) - newest) < dt.timedelta(milliseconds=1)
    assert body["late"] == 1
    assert body["invalid"] == {'unknown type "..."': 1}
    assert body["counters"] == read.counters(store)
    assert body["counters"]["duplicates"] == 1

    # Parameters: the default is 30 minutes; out of bounds is a 400.
    assert len(reader.get("/v1/live").json()["minutes"]) == 30
    assert len(reader.get("/v1/live?minutes=1440").json()["minutes"]) == 1440
    for bad in ("0", "1441", "ten", "-5"):
        answer = reader.get("/v1/live", params={"minutes": bad})
        assert answer.status_code == 400 and answer.json()["limit"] == "parameters", bad
    reader.close()


def test_live_answers_while_the_stream_writes(make_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server: Server = make_server()
    write_key = server.create_key("web")
    read_key = KeyStore(server.settings.api_keys_path).create("screen", kind="read")
    log = (tmp_path / "stream.log").open("wb")
    stream = subprocess.Popen([SLUICE, "stream"], env=server.env, stdout=log, stderr=log)
    try:
        sent = 0
        with (
            httpx.Client(base_url=server.url, auth=(write_key, "")) as writer,
            httpx.Client(base_url=server.url, auth=(read_key, "")) as reader,
        ):
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if sent < 400:
                    now = dt.datetime.now(dt.UTC)
                    batch = [
                        {"type": "track", "event": "Feature Used", "userId": f"u-{n}"}
                        | {"timestamp": iso(now), "messageId": f"w-{sent + n}"}
                        for n in range(20)
                    ]
                    assert writer.post("/v1/batch", json={"batch": batch}).status_code == 200
                    sent += len(batch)
                answer = reader.get("/v1/live?minutes=5")
                # 503 only until the worker has created its store.
                assert answer.status_code in (200, 503), answer.text
                if answer.status_code == 200 and sent == 400:
                    body = answer.json()
                    if sum(row["events"] for row in body["minutes"]) == sent:
                        assert body["counters"]["added"] == sent
                        break
            else:
                raise AssertionError("the live figures never reached what was sent")
            # The tier's SLO figures: every event's lag, from receivedAt to the commit.
            assert body["worker"]["running"] is True
            assert _at(body["worker"]["heartbeat_at"]) > dt.datetime.now(dt.UTC) - dt.timedelta(
                seconds=read.STALE_SECONDS
            )
            lag = body["lag"]
            assert lag["window_minutes"] == 5 and lag["events"] == sent
            assert 0 <= lag["p50_seconds"] <= lag["p95_seconds"] < 60
            metrics = httpx.get(f"{server.url}/metrics").text
    finally:
        stream.send_signal(signal.SIGTERM)
        stream.wait(timeout=30)
        log.close()
    samples = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line and not line.startswith("#")
    }
    assert samples["sluice_realtime_lag_seconds_count"] == sent
    assert samples['sluice_realtime_lag_seconds_bucket{le="+Inf"}'] == sent
    recent_p95 = samples['sluice_realtime_recent_lag_seconds{quantile="0.95"}']
    assert recent_p95 == pytest.approx(lag["p95_seconds"], abs=0.001)
    assert samples["sluice_realtime_worker_up"] == 1.0
    assert samples['sluice_realtime_messages{outcome="added"}'] == sent
    assert samples["sluice_live_duration_seconds_count"] >= 2
    # Each /v1/live request is a line of the access log, with the reader's key name.
    access = [line for line in server.log_path.read_text().splitlines() if "/v1/live" in line]
    assert any('"reader": "screen"' in line and '"minutes": 5' in line for line in access)
