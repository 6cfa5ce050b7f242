"""Kill the server with SIGKILL mid-load: every acknowledged event is loaded, and once.

Concurrent clients send a bounded number of events (unique messageIds) and, like Segment's
SDKs, resend a batch until it gets a 200. Some batches are resent on purpose after their
200, as an SDK does when a response is lost. The server is killed at a random moment and
restarted; afterwards every acknowledged event must be in raw.events (through the real dlt
load) and in core.fct_events exactly once.
"""

from __future__ import annotations

import datetime as dt
import random
import signal
import threading
import time

import duckdb
import httpx
import pytest

from sluice.runs import materialize_range, run_job
from tests.ingestion.api.conftest import Server

pytestmark = pytest.mark.slow

CLIENTS = 4
BATCHES_PER_CLIENT = 60
BATCH_SIZE = 20
DEADLINE_SECONDS = 90


def test_sigkill_mid_load_loses_no_acknowledged_event_and_counts_retries_once(
    make_server,  # type: ignore[no-untyped-def]
) -> None:
    day = dt.date.today() - dt.timedelta(days=1)
    server: Server = make_server(day)
    key = server.create_key("fault")
    timestamp = dt.datetime.combine(day, dt.time(8), tzinfo=dt.UTC).isoformat()
    acknowledged: set[str] = set()
    resent = 0
    lock = threading.Lock()
    deadline = time.monotonic() + DEADLINE_SECONDS
    rng = random.Random()

    def send(batch: list[dict[str, object]], http: httpx.Client) -> None:
        while time.monotonic() < deadline:
            try:
                response = http.post(f"{server.url}/v1/batch", json={"batch": batch})
                if response.status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise TimeoutError("the server did not come back in time")

    def client(number: int) -> None:
        nonlocal resent
        with httpx.Client(auth=(key, ""), timeout=5) as http:
            for b in range(BATCHES_PER_CLIENT):
                batch = [
                    {
                        "type": "track",
                        "event": "Feature Used",
                        "userId": f"user-{number}-{i}",
                        "messageId": f"fault-{number}-{b}-{i}",
                        "timestamp": timestamp,
                    }
                    for i in range(BATCH_SIZE)
                ]
                send(batch, http)
                with lock:
                    acknowledged.update(str(m["messageId"]) for m in batch)
                if b % 10 == 0:  # a lost response: the SDK sends the same batch again
                    send(batch, http)
                    with lock:
                        resent += len(batch)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    # A random moment while the clients are busy: after 10-60 % of the events were answered.
    kill_at = int(rng.uniform(0.1, 0.6) * CLIENTS * BATCHES_PER_CLIENT * BATCH_SIZE)
    while len(acknowledged) < kill_at and time.monotonic() < deadline:
        time.sleep(0.001)
    server.stop(signal.SIGKILL)
    killed_with = len(acknowledged)
    server.start()
    for thread in threads:
        thread.join(timeout=DEADLINE_SECONDS)
    assert len(acknowledged) == CLIENTS * BATCHES_PER_CLIENT * BATCH_SIZE
    assert 0 < killed_with < len(acknowledged), "the kill should land mid-load"
    # raw.rejected_events must exist for dbt's staging (a load with no rejected line does
    # not create it yet): one quarantined message, as any real day has.
    bad = {"batch": [{"type": "track", "userId": "no-event", "timestamp": timestamp}]}
    assert httpx.post(f"{server.url}/v1/batch", json=bad, auth=(key, "")).status_code == 200
    server.stop()

    assert run_job(server.settings, "load").success
    with duckdb.connect(str(server.settings.warehouse_path), read_only=True) as con:
        raw_ids = [row[0] for row in con.execute("select message_id from raw.events").fetchall()]
    assert acknowledged <= set(raw_ids)
    assert len(raw_ids) >= len(acknowledged) + resent

    outcome = materialize_range(server.settings, day, day)
    assert outcome.success, outcome.message
    with duckdb.connect(str(server.settings.warehouse_path), read_only=True) as con:
        counted = con.execute(
            "select count(*), count(distinct message_id) from core.fct_events "
            "where message_id like 'fault-%'"
        ).fetchone()
        dau = con.execute("select active_users from marts.dau where event_date = ?", [day])
        active = dau.fetchone()
    assert counted == (len(acknowledged), len(acknowledged))
    assert active == (CLIENTS * BATCH_SIZE,)
