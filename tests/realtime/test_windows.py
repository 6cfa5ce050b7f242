"""Messages sent with the official Segment SDK through a real ``sluice serve``, folded by the
stream worker: its minute windows equal a computation of the test's own."""

from __future__ import annotations

import datetime as dt
import random
import time
import uuid
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from segment.analytics import Client

from common.contract import TimestampParser, contract_reason
from realtime import read
from realtime.windows import Message, parse_line
from realtime.worker import StreamWorker
from tests.ingestion.api.conftest import Server, iso
from tests.ingestion.api.strategies import messages, timestamps
from tests.realtime.conftest import expected_windows, seed_rates

MINUTES = 8
ORDERS = [
    {"revenue": 19.99},
    {"revenue": "42.50", "currency": "EUR"},
    {"total": 10, "currency": " gbp "},
    {"revenue": 7},
    {"revenue": 99, "currency": "XYZ"},  # unknown currency: an order, no dollars
]


def _messages(base: dt.datetime, count: int) -> list[dict[str, Any]]:
    """``count`` messages over ``MINUTES`` minutes of event time, a little out of order (never
    by more than the allowed lateness), none within two seconds of a minute's edge (the
    API's skew correction moves a timestamp by the request's milliseconds)."""
    rng = random.Random(13)
    messages = []
    for n in range(count):
        offset = n * MINUTES * 60 // count - rng.randrange(90)
        at = base + dt.timedelta(seconds=max(offset, 0))
        if at.second in (58, 59, 0, 1):
            at = at.replace(second=30)
        user = f"user-{rng.randrange(70)}"
        kind = rng.choice(["track", "track", "page", "screen", "identify"])
        message: dict[str, Any] = {
            "type": kind,
            "userId": user,
            "timestamp": iso(at),
            "messageId": str(uuid.UUID(int=rng.getrandbits(128))),
        }
        if kind == "track":
            message["event"] = rng.choice(["Feature Used", "Signed Up", "Order Completed"])
            if message["event"] == "Order Completed":
                message["properties"] = ORDERS[n % len(ORDERS)]
        if kind == "identify" and n % 3 == 0:
            del message["userId"]
            message["anonymousId"] = f"anon-{n}"
        messages.append(message)
    return messages


def _send(client: Client, message: dict[str, Any]) -> None:
    at = dt.datetime.fromisoformat(message["timestamp"])
    common = {
        "timestamp": at,
        "message_id": message["messageId"],
        "anonymous_id": message.get("anonymousId"),
    }
    user = message.get("userId")
    kind = message["type"]
    if kind == "track":
        client.track(user, message["event"], message.get("properties"), **common)
    elif kind == "page":
        client.page(user, None, "Docs", **common)
    elif kind == "screen":
        client.screen(user, None, "Home", **common)
    else:
        client.identify(user, {"plan": "pro"}, **common)


def test_windows_of_sdk_traffic_equal_an_independent_count(make_server) -> None:  # type: ignore[no-untyped-def]
    now = dt.datetime.now(dt.UTC)
    base = now.replace(second=0, microsecond=0) - dt.timedelta(minutes=30)
    server: Server = make_server(now.date(), SLUICE_API_SEGMENT_SECONDS="1")
    key = server.create_key("mobile")
    messages = _messages(base, 400)
    currencies = {m.get("properties", {}).get("currency") for m in messages}
    assert {"EUR", " gbp ", "XYZ"} <= currencies
    duplicates = messages[::20]
    client = Client(key, host=server.url, max_retries=3, upload_size=50)
    failures: list[object] = []
    client.on_error = lambda error, batch: failures.append(error)

    worker = StreamWorker(server.settings)
    for message in messages[:200]:
        _send(client, message)
    client.flush()
    worker.run_once()  # reads the open segment; the rest of it is read after it closes
    for message in messages[200:] + duplicates:
        _send(client, message)
    client.flush()
    # Late: an hour older than the newest event, sent after it; left to the batch tier.
    late = [{**m, "messageId": f"late-{n}"} for n, m in enumerate(messages[:10])]
    for message in late:
        message["timestamp"] = iso(
            dt.datetime.fromisoformat(message["timestamp"]) - dt.timedelta(hours=1)
        )
        _send(client, message)
    client.flush()
    client.shutdown()
    assert failures == []
    valid = {"userId": "u1", "timestamp": iso(base + dt.timedelta(seconds=30))}
    invalid = [
        {**valid, "type": "track"},
        {**valid, "type": "track", "event": "Signed Up", "userId": None},
        {**valid, "type": "click"},
        {**valid, "type": "page", "timestamp": "yesterday"},
        {**valid, "type": "page", "properties": [1]},
        {**valid, "type": "page", "messageId": "m" * 101},
    ]
    answer = httpx.post(f"{server.url}/v1/batch", json={"batch": invalid}, auth=(key, ""))
    assert answer.json()["rejected"] == len(invalid)
    time.sleep(1.5)  # let the API close the open segment: it is read on under its new name
    worker.run_once()
    worker.close()

    store = server.settings.realtime_store_path
    expected = expected_windows(messages)
    first, last = base - dt.timedelta(hours=2), base + dt.timedelta(minutes=MINUTES + 1)
    minutes = read.windows(store, first, last)
    assert {(f.start, name): n for f in minutes for name, n in f.events_by_name.items()} == dict(
        expected.events
    )
    assert {f.start: f.orders for f in minutes if f.orders} == dict(expected.orders)
    revenue = {f.start: f.revenue_usd for f in minutes if f.revenue_usd}
    assert revenue == pytest.approx(dict(expected.revenue), rel=1e-9)
    for figures in minutes:
        exact = len(expected.users[figures.start])
        assert figures.active_users == pytest.approx(exact, rel=0.02)

    whole = read.total(store, first, last)
    everyone = set().union(*expected.users.values())
    assert whole.events == len(messages)
    assert whole.active_users == pytest.approx(len(everyone), rel=0.02)
    assert whole.revenue_usd == pytest.approx(sum(expected.revenue.values()), rel=1e-9)
    five = read.windows(store, first, last, read.FIVE_MINUTES)
    assert sum(f.events for f in five) == len(messages)
    for figures in five:
        in_window = [u for m, u in expected.users.items() if figures.start <= m < figures.end]
        assert figures.active_users == pytest.approx(len(set().union(*in_window)), rel=0.02)
    assert read.today_so_far(store, now=last).events == sum(
        n for (minute, _), n in expected.events.items() if minute.date() == last.date()
    )

    counters = read.counters(store)
    assert counters["added"] == len(messages)
    assert counters["duplicates"] == len(duplicates)
    assert counters["late"] == len(late)
    assert counters["orders with an unknown currency"] == sum(
        1 for m in messages if m.get("properties", {}).get("currency") == "XYZ"
    )
    assert {k: v for k, v in counters.items() if k.startswith("invalid: ")} == {
        "invalid: track message without event": 1,
        "invalid: missing userId and anonymousId (at least one is required)": 1,
        'invalid: unknown type "..."': 1,
        'invalid: timestamp "..." is not an ISO-8601 timestamp': 1,
        "invalid: properties is not an object": 1,
        "invalid: messageId longer than 100 characters": 1,
    }
    assert counters["lines"] == len(messages) + len(duplicates) + len(late) + len(invalid)


@settings(max_examples=400, deadline=None)
@given(doc=messages(), received=st.one_of(st.none(), timestamps()))
def test_the_worker_rejects_what_the_contract_rejects(doc: Any, received: Any) -> None:
    """The worker parses each timestamp once and tells the contract which ones it parsed:
    its answer is still the contract's, reason for reason."""
    if isinstance(doc, dict) and received is not None:
        doc["receivedAt"] = received
    try:
        line = orjson.dumps(doc)
    except TypeError:  # integers past 64 bits: the worker reads such a line as malformed
        assume(False)
    parser = TimestampParser()
    expected = contract_reason(orjson.loads(line), parser)
    got = parse_line(line, parser, seed_rates())
    if expected is None:
        assert isinstance(got, Message)
    else:
        assert got == expected
