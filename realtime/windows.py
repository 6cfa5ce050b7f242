"""Fold landed messages into event-time minute windows: events by name, orders, revenue in US
dollars, and a sketch of the active users.

Each line is parsed (orjson) and checked against the event contract (``common.contract``);
a line that breaks it is counted by its rule (``reason_kind``) and dropped, as the loader
would reject it. A valid message falls in the UTC minute of its ``timestamp``, under its
name (a ``track``'s ``event``, else its type). Orders and revenue follow the marts' rules
(``realtime.revenue``); active users (the user key of a ``track``, ``page`` or ``screen``,
as docs/events.md defines them) go into an HLL sketch per minute, which ``datasketches``
merges and serializes.

A ``messageId`` counts once: a copy seen in this batch or remembered by the store (the dedup
horizon, ``DEDUP_HORIZON_SECONDS`` of event time) is a duplicate. The watermark is the newest
event time seen minus the allowed lateness: an older event is counted as late and left to
the batch tier. An event moves the watermark no further than its ``receivedAt``: the API
takes timestamps up to a day ahead (a client clock that is wrong, without ``sentAt`` to
correct it), and one such event must not make every other event late. The lateness is
shorter than the horizon, so every event that is not late still finds any earlier copy of
itself. Reads no environment.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from datasketches import hll_sketch, hll_union

from common import contract
from common.contract import TimestampParser, contract_reason, reason_kind, text_of, valid_utf8
from realtime.revenue import ORDER_EVENT, order_revenue_usd

MINUTE_SECONDS = 60
DAY_SECONDS = 86400
# How long (in event time) a messageId is remembered; a day, as copies arrive within one.
DEDUP_HORIZON_SECONDS = 24 * 3600
# HLL precision: about 0.8% standard error, a 2-16 KB sketch per minute.
SKETCH_LG_K = 14
ACTIVE_TYPES = frozenset({"track", "page", "screen"})

# Counter names besides the contract's reasons (stored as "invalid: <reason>").
LINES = "lines"
ADDED = "added"
DUPLICATES = "duplicates"
LATE = "late"
UNKNOWN_CURRENCY = "orders with an unknown currency"
INVALID_PREFIX = "invalid: "


@dataclass(frozen=True)
class Message:
    """A valid message, reduced to what the windows need."""

    message_id: str
    event_at: float  # seconds since the epoch, UTC
    # How far the message may move the watermark: its event time, at most its receivedAt.
    watermark_at: float
    # When the ingest API took it (its ``receivedAt``): the start of the ack-to-visible lag.
    received_at: float | None
    name: str
    user_key: str
    active: bool
    order: bool
    revenue_usd: float | None


def parse_line(
    line: bytes, timestamps: TimestampParser, rates: Mapping[str, float]
) -> Message | str:
    """The message of one landing line (no newline), or the contract's reason to reject it."""
    try:
        doc: Any = orjson.loads(line)
    except orjson.JSONDecodeError:
        return contract.MALFORMED_JSON
    # Each timestamp is parsed once: the ones that parse here are valid for the contract too
    # (same parser, same text), and a batch's lines share their sentAt.
    parsed: dict[str, dt.datetime] = {}
    if isinstance(doc, dict):
        for field, parse in (
            ("timestamp", timestamps.parse),
            ("receivedAt", timestamps.parse),
            ("sentAt", timestamps.parse_repeated),
        ):
            text = doc.get(field)
            if isinstance(text, str) and (value := parse(text)) is not None:
                parsed[field] = value
    reason = contract_reason(doc, timestamps, frozenset(parsed))
    if reason is not None:
        return reason
    kind = doc["type"]
    event_at = parsed.get("timestamp") or timestamps.parse(text_of(doc["timestamp"]) or "")
    if event_at is None:  # contract_reason parsed it already; kept for the type checker
        return contract.NOT_A_TIMESTAMP.format(field="timestamp", value=doc["timestamp"])
    received_at = parsed.get("receivedAt")
    if received_at is None and doc.get("receivedAt") is not None:  # not text, yet valid
        received_at = timestamps.parse(text_of(doc["receivedAt"]) or "")
    name = text_of(doc.get("event")) if kind == "track" else None
    order = name == ORDER_EVENT
    return Message(
        # The loader's id for a line without one (ingestion/landing/queries.py).
        message_id=text_of(doc.get("messageId")) or "sluice-" + hashlib.md5(line).hexdigest(),
        event_at=event_at.timestamp(),
        watermark_at=min(event_at, received_at or event_at).timestamp(),
        received_at=None if received_at is None else received_at.timestamp(),
        name=name or kind,
        user_key=text_of(doc.get("userId")) or text_of(doc.get("anonymousId")) or "",
        active=kind in ACTIVE_TYPES,
        order=order,
        revenue_usd=order_revenue_usd(doc.get("properties"), rates) if order else None,
    )


@dataclass
class MinuteFigures:
    events: int = 0
    orders: int = 0
    revenue_usd: float = 0.0


@dataclass
class Fold:
    """What one batch adds: the store writes it in one transaction with the offsets."""

    minutes: dict[tuple[int, str], MinuteFigures] = field(default_factory=dict)
    users: dict[int, hll_sketch] = field(default_factory=dict)
    # messageId -> event time, for the dedup horizon.
    seen: dict[str, float] = field(default_factory=dict)
    counters: Counter[str] = field(default_factory=Counter)
    max_event_at: float | None = None
    # Late events by the UTC day of their event time (its midnight, epoch seconds): what the
    # batch tier counts and the windows do not.
    late_days: Counter[int] = field(default_factory=Counter)
    # The receivedAt of each added event: the store turns them into ack-to-visible lags.
    received: list[float] = field(default_factory=list)


def minute_of(event_at: float) -> int:
    return int(event_at // MINUTE_SECONDS) * MINUTE_SECONDS


def day_of(event_at: float) -> int:
    """The UTC midnight of ``event_at``'s day, in seconds since the epoch."""
    return int(event_at // DAY_SECONDS) * DAY_SECONDS


def parse_lines(
    data: bytes, timestamps: TimestampParser, rates: Mapping[str, float]
) -> list[Message | str]:
    """Every whole line of ``data`` (which ends with a newline), parsed or rejected."""
    return [parse_line(line, timestamps, rates) for line in valid_utf8(data).split(b"\n")[:-1]]


def fold(
    parsed: Iterable[Message | str],
    *,
    already_seen: set[str],
    max_event_at: float | None,
    lateness_seconds: int,
) -> Fold:
    """Fold messages, in landing order, into minute windows; ``already_seen`` holds the ids of
    this batch that the store remembers, ``max_event_at`` the newest event time so far."""
    result = Fold(max_event_at=max_event_at)
    counters = result.counters
    for item in parsed:
        counters[LINES] += 1
        if isinstance(item, str):
            counters[INVALID_PREFIX + reason_kind(item)] += 1
            continue
        if item.message_id in already_seen or item.message_id in result.seen:
            counters[DUPLICATES] += 1
            continue
        newest = result.max_event_at
        if newest is not None and item.event_at < newest - lateness_seconds:
            counters[LATE] += 1
            result.late_days[day_of(item.event_at)] += 1
            continue
        moved = item.watermark_at
        result.max_event_at = moved if newest is None else max(newest, moved)
        result.seen[item.message_id] = item.event_at
        counters[ADDED] += 1
        if item.received_at is not None:
            result.received.append(item.received_at)
        minute = minute_of(item.event_at)
        figures = result.minutes.setdefault((minute, item.name), MinuteFigures())
        figures.events += 1
        if item.order:
            figures.orders += 1
            if item.revenue_usd is None:
                counters[UNKNOWN_CURRENCY] += 1
            else:
                figures.revenue_usd += item.revenue_usd
        if item.active:
            sketch = result.users.get(minute)
            if sketch is None:
                sketch = result.users[minute] = hll_sketch(SKETCH_LG_K)
            sketch.update(item.user_key)
    return result


def merge_sketches(sketches: Iterable[hll_sketch]) -> hll_sketch:
    """The union of ``sketches``: the users of all of them, each once."""
    union = hll_union(SKETCH_LG_K)
    for sketch in sketches:
        union.update(sketch)
    return union.get_result()


def utc(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)
