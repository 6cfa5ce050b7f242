"""``sluice stream`` as its own process beside ``sluice serve``: SIGKILLed while events keep
arriving and started again, it ends with every event counted once."""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from realtime import read
from tests.ingestion.api.conftest import Server, iso, landed_lines
from tests.realtime.conftest import expected_windows

SLUICE = str(Path(sys.executable).with_name("sluice"))
BATCHES = 60
BATCH_SIZE = 25


def _batch(base: dt.datetime, number: int) -> list[dict[str, Any]]:
    """Batch ``number``: one event a second of event time; every fifth batch repeats one
    message of the batch before (a client retry)."""
    batch: list[dict[str, Any]] = []
    for n in range(BATCH_SIZE):
        index = number * BATCH_SIZE + n
        message = {
            "type": "track",
            "event": "Order Completed" if index % 10 == 0 else "Feature Used",
            "userId": f"user-{index % 97}",
            "timestamp": iso(base + dt.timedelta(seconds=index // 5, milliseconds=100)),
            "messageId": f"m-{index}",
        }
        if message["event"] == "Order Completed":
            message["properties"] = {"revenue": 12.5, "currency": "EUR" if index % 20 else "USD"}
        batch.append(message)
    if number % 5 == 4:
        batch.append(_batch(base, number - 1)[0])
    return batch


class Stream:
    def __init__(self, server: Server, log: Path) -> None:
        self.server = server
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log.touch()
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [SLUICE, "stream"], env=self.server.env, stdout=out, stderr=out
            )

    def signal(self, signum: int) -> int:
        assert self.process is not None
        self.process.send_signal(signum)
        return self.process.wait(timeout=30)


def _wait_for(condition: Any, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_killed_stream_loses_and_doubles_nothing(make_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    now = dt.datetime.now(dt.UTC)
    base = now.replace(second=0, microsecond=0) - dt.timedelta(minutes=20)
    server: Server = make_server(now.date(), SLUICE_API_SEGMENT_SECONDS="1")
    key = server.create_key("web")
    store = server.settings.realtime_store_path
    stream = Stream(server, tmp_path / "stream.log")
    stream.start()
    # Printed once the store and its tables exist.
    _wait_for(lambda: "reading " in stream.log.read_text(), "the worker to start")

    sent: list[dict[str, Any]] = []

    def send() -> None:
        with httpx.Client(base_url=server.url, auth=(key, "")) as client:
            for number in range(BATCHES):
                batch = _batch(base, number)
                answer = client.post("/v1/batch", json={"batch": batch})
                assert answer.json() == {"success": True, "accepted": len(batch), "rejected": 0}
                sent.extend(batch)
                time.sleep(0.03)

    sender = threading.Thread(target=send)
    sender.start()
    _wait_for(lambda: read.counters(store).get("lines", 0) > 0, "a first batch")
    assert stream.signal(signal.SIGKILL) == -signal.SIGKILL
    killed_at = len(sent)
    time.sleep(0.5)  # more events land while no worker runs
    stream.start()
    sender.join()
    assert 0 < killed_at < len(sent)

    landed = len(landed_lines(server.settings))
    assert landed == len(sent)
    _wait_for(lambda: read.counters(store).get("lines") == landed, "the stream to catch up")
    assert stream.signal(signal.SIGTERM) == 0
    assert "stopped; every batch read is committed" in stream.log.read_text()

    first = {m["messageId"]: m for m in reversed(sent)}
    expected = expected_windows(first.values())
    span = (base, base + dt.timedelta(hours=1))
    minutes = read.windows(store, *span)
    assert {(f.start, name): n for f in minutes for name, n in f.events_by_name.items()} == dict(
        expected.events
    )
    whole = read.total(store, *span)
    assert whole.events == len(first)
    assert whole.orders == sum(expected.orders.values())
    assert (
        whole.revenue_usd == sum(expected.revenue.values())
        or abs(whole.revenue_usd - sum(expected.revenue.values())) < 1e-6
    )
    counters = read.counters(store)
    assert counters["duplicates"] == len(sent) - len(first)
    assert counters.get("late", 0) == 0


def test_a_killed_api_loses_and_doubles_nothing(make_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """SIGKILL ``sluice serve`` while a client sends and ``sluice stream`` reads: the client
    retries what was not acknowledged (same messageIds, as the Segment libraries do), and
    the windows count every message once."""
    now = dt.datetime.now(dt.UTC)
    base = now.replace(second=0, microsecond=0) - dt.timedelta(minutes=20)
    server: Server = make_server(now.date(), SLUICE_API_SEGMENT_SECONDS="1")
    key = server.create_key("web")
    store = server.settings.realtime_store_path
    stream = Stream(server, tmp_path / "stream.log")
    stream.start()
    _wait_for(lambda: "reading " in stream.log.read_text(), "the worker to start")

    sent: list[dict[str, Any]] = []
    failures: list[str] = []

    def send() -> None:
        with httpx.Client(base_url=server.url, auth=(key, ""), timeout=5) as client:
            for number in range(BATCHES):
                batch = _batch(base, number)
                deadline = time.monotonic() + 60
                while True:  # retry until acknowledged, as an SDK does
                    try:
                        answer = client.post("/v1/batch", json={"batch": batch})
                        if answer.status_code == 200:
                            break
                        failures.append(f"HTTP {answer.status_code}")
                    except httpx.TransportError as error:
                        failures.append(type(error).__name__)
                    assert time.monotonic() < deadline, failures[-5:]
                    time.sleep(0.05)
                sent.extend(batch)
                time.sleep(0.02)

    sender = threading.Thread(target=send)
    sender.start()
    _wait_for(lambda: len(sent) >= BATCHES // 3 * BATCH_SIZE, "a third of the batches")
    assert server.process is not None
    server.process.kill()
    server.process.wait(timeout=30)
    server.process = None
    killed_at = len(sent)
    time.sleep(0.3)  # the client's requests fail while no server runs
    server.start()
    sender.join()
    assert 0 < killed_at < len(sent)
    assert failures, "the client never saw the server gone"

    first = {m["messageId"]: m for m in reversed(sent)}
    _wait_for(lambda: read.counters(store).get("added") == len(first), "the stream to catch up")
    time.sleep(1)  # nothing more arrives
    assert stream.signal(signal.SIGTERM) == 0
    expected = expected_windows(first.values())
    span = (base, base + dt.timedelta(hours=1))
    minutes = read.windows(store, *span)
    assert {(f.start, name): n for f in minutes for name, n in f.events_by_name.items()} == dict(
        expected.events
    )
    whole = read.total(store, *span)
    assert (whole.events, whole.orders) == (len(first), sum(expected.orders.values()))
    assert abs(whole.revenue_usd - sum(expected.revenue.values())) < 1e-6
    counters = read.counters(store)
    assert counters["added"] == len(first)
    assert counters.get("late", 0) == 0
