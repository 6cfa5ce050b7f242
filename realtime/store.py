"""The real-time store: one SQLite file in WAL mode, written by ``sluice stream`` and read by
anyone while it is written (``realtime.read``).

Tables: ``minute_events`` (minute, event name: events, orders, revenue in US dollars),
``minute_users`` (minute: the HLL sketch of its active users, compact bytes),
``segment_offsets`` (how far each landing segment is read), ``seen_messages`` (the dedup
horizon: messageId and event time), ``counters`` (lines, added, duplicates, late, invalid by
rule, ...), ``state`` (the newest event time, which the watermark follows, and the worker's
heartbeat), and the worker's own figures by the minute it committed them (processing time):
``minute_processed`` (lines, added, duplicates, late, invalid) and ``minute_lag`` (a histogram
of the ack-to-visible lag: commit time minus ``receivedAt``, per added event), with
``lag_buckets`` the same histogram since the store began, and ``late_days`` (late events by
the UTC day of their event time, which reconciliation with the marts reads).

``commit`` writes one batch in one transaction: its windows, its offsets, its ids, its
counters. A worker killed at any point leaves the store at the end of some batch, and the
next one reads on from that batch's offsets, so nothing is lost or counted twice. WAL with
``synchronous = NORMAL``: a power cut may lose the last transactions, but always windows and
offsets together, so they are read again. Retention (minute windows older than the newest
event by ``retention_days``; ids older than the dedup horizon) is applied in the same
transaction. Hand-written SQL over the standard library's sqlite3: the store is a few upserts,
and SQLite is what lets a reader open it while the worker writes, with no server. Reads no
environment.
"""

from __future__ import annotations

import bisect
import sqlite3
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

from datasketches import hll_sketch

from realtime.windows import (
    ADDED,
    DEDUP_HORIZON_SECONDS,
    DUPLICATES,
    INVALID_PREFIX,
    LATE,
    LINES,
    Fold,
    merge_sketches,
    minute_of,
)

SCHEMA = """
create table if not exists minute_events (
    minute_start integer not null,  -- seconds since the epoch, UTC, a whole minute
    event_name text not null,
    events integer not null,
    orders integer not null,
    revenue_usd real not null,
    primary key (minute_start, event_name)
) without rowid;
create table if not exists minute_users (
    minute_start integer primary key,
    sketch blob not null  -- datasketches hll_sketch, serialize_compact()
);
create table if not exists segment_offsets (
    segment text primary key,  -- <source>/<stem>, the same open and closed
    offset integer not null
) without rowid;
create table if not exists seen_messages (
    message_id text primary key,
    event_at real not null
) without rowid;
create index if not exists seen_messages_by_time on seen_messages (event_at);
create table if not exists counters (
    name text primary key,
    value integer not null
) without rowid;
create table if not exists state (
    name text primary key,
    value real not null
) without rowid;
create table if not exists minute_processed (
    minute_start integer not null,  -- the UTC minute the worker committed them in
    name text not null,  -- lines, added, duplicates, late, invalid, lag_ms (sum of the lags)
    value integer not null,
    primary key (minute_start, name)
) without rowid;
create table if not exists minute_lag (
    minute_start integer not null,  -- the UTC minute the worker committed them in
    bucket integer not null,  -- index into LAG_BUCKETS: lag <= LAG_BUCKETS[bucket]
    events integer not null,
    primary key (minute_start, bucket)
) without rowid;
create table if not exists lag_buckets (
    bucket integer primary key,  -- as minute_lag, since the store began (never deleted)
    events integer not null
);
create table if not exists late_days (
    day_start integer primary key,  -- UTC midnight of the late events' event time
    late integer not null
);
"""

# Upper bounds (seconds) of the lag histogram's buckets; the last takes the rest.
LAG_BUCKETS = (
    0.025,
    0.05,
    0.1,
    0.2,
    0.3,
    0.5,
    0.75,
    1.0,
    1.5,
    2.0,
    3.0,
    5.0,
    7.5,
    10.0,
    15.0,
    30.0,
    60.0,
    120.0,
    300.0,
    float("inf"),
)
# The names of minute_processed besides the counters: the lags' sum in milliseconds.
LAG_MS = "lag_ms"
HEARTBEAT_AT = "heartbeat_at"
# The sum of every lag in lag_buckets (seconds), for the histogram's _sum.
LAG_SECONDS_SUM = "lag_seconds_sum"

MAX_EVENT_AT = "max_event_at"
_IN_CHUNK = 500


def connect(path: Path, *, read_only: bool = False) -> sqlite3.Connection:
    """A connection to the store; the writer creates it (and its folder) when missing."""
    if read_only:
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist yet; run `sluice stream` first")
        con = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, isolation_level=None)
        con.execute("pragma busy_timeout = 5000")
        return con
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("pragma busy_timeout = 5000")
    con.execute("pragma journal_mode = wal")
    con.execute("pragma synchronous = normal")
    con.executescript(SCHEMA)
    return con


def offsets(con: sqlite3.Connection) -> dict[str, int]:
    return dict(con.execute("select segment, offset from segment_offsets").fetchall())


def max_event_at(con: sqlite3.Connection) -> float | None:
    row = con.execute("select value from state where name = ?", [MAX_EVENT_AT]).fetchone()
    return None if row is None else float(row[0])


def counters(con: sqlite3.Connection) -> dict[str, int]:
    return dict(con.execute("select name, value from counters order by name").fetchall())


def seen_among(con: sqlite3.Connection, message_ids: list[str]) -> set[str]:
    """The ids among ``message_ids`` that the dedup horizon remembers."""
    seen: set[str] = set()
    for start in range(0, len(message_ids), _IN_CHUNK):
        chunk = message_ids[start : start + _IN_CHUNK]
        marks = ",".join("?" * len(chunk))
        rows = con.execute(
            f"select message_id from seen_messages where message_id in ({marks})", chunk
        )
        seen.update(row[0] for row in rows)
    return seen


def commit(
    con: sqlite3.Connection,
    fold: Fold,
    new_offsets: Mapping[str, int],
    retention_days: int,
    now: float | None = None,
) -> None:
    """Write one batch and its segments' new offsets in one transaction; ``now`` (default:
    the clock) is the commit's time, from which the batch's lags are measured."""
    now = time.time() if now is None else now
    con.execute("begin immediate")
    try:
        _write(con, fold, new_offsets, retention_days)
        _write_processed(con, fold, now, retention_days)
    except BaseException:
        con.execute("rollback")
        raise
    con.execute("commit")


def beat(con: sqlite3.Connection, now: float | None = None) -> None:
    """Record that the worker is alive though it had nothing to commit."""
    con.execute(
        "insert or replace into state (name, value) values (?, ?)",
        [HEARTBEAT_AT, time.time() if now is None else now],
    )


def heartbeat_at(con: sqlite3.Connection) -> float | None:
    row = con.execute("select value from state where name = ?", [HEARTBEAT_AT]).fetchone()
    return None if row is None else float(row[0])


def lag_bucket(lag: float) -> int:
    return bisect.bisect_left(LAG_BUCKETS, lag)


def _write_processed(con: sqlite3.Connection, fold: Fold, now: float, retention_days: int) -> None:
    """The batch's counts and lags under the minute of ``now``, and the heartbeat."""
    minute = minute_of(now)
    counts = fold.counters
    lags = [max(0.0, now - received) for received in fold.received]
    processed = {
        LINES: counts[LINES],
        ADDED: counts[ADDED],
        DUPLICATES: counts[DUPLICATES],
        LATE: counts[LATE],
        "invalid": sum(v for k, v in counts.items() if k.startswith(INVALID_PREFIX)),
        LAG_MS: round(sum(lags) * 1000),
    }
    con.executemany(
        """
        insert into minute_processed (minute_start, name, value) values (?, ?, ?)
        on conflict (minute_start, name) do update set value = value + excluded.value
        """,
        [(minute, name, value) for name, value in processed.items() if value],
    )
    buckets = Counter(lag_bucket(lag) for lag in lags)
    con.executemany(
        """
        insert into minute_lag (minute_start, bucket, events) values (?, ?, ?)
        on conflict (minute_start, bucket) do update set events = events + excluded.events
        """,
        [(minute, bucket, events) for bucket, events in buckets.items()],
    )
    con.executemany(
        """
        insert into lag_buckets (bucket, events) values (?, ?)
        on conflict (bucket) do update set events = events + excluded.events
        """,
        buckets.items(),
    )
    con.executemany(
        """
        insert into late_days (day_start, late) values (?, ?)
        on conflict (day_start) do update set late = late + excluded.late
        """,
        fold.late_days.items(),
    )
    con.execute(
        """
        insert into state (name, value) values (?, ?)
        on conflict (name) do update set value = value + excluded.value
        """,
        [LAG_SECONDS_SUM, sum(lags)],
    )
    beat(con, now)
    keep_from = now - retention_days * 86400
    con.execute("delete from minute_processed where minute_start < ?", [keep_from])
    con.execute("delete from minute_lag where minute_start < ?", [keep_from])


def _write(
    con: sqlite3.Connection, fold: Fold, new_offsets: Mapping[str, int], retention_days: int
) -> None:
    con.executemany(
        """
        insert into minute_events (minute_start, event_name, events, orders, revenue_usd)
        values (?, ?, ?, ?, ?)
        on conflict (minute_start, event_name) do update set
            events = events + excluded.events,
            orders = orders + excluded.orders,
            revenue_usd = revenue_usd + excluded.revenue_usd
        """,
        [
            (minute, name, figures.events, figures.orders, figures.revenue_usd)
            for (minute, name), figures in fold.minutes.items()
        ],
    )
    for minute, sketch in fold.users.items():
        row = con.execute(
            "select sketch from minute_users where minute_start = ?", [minute]
        ).fetchone()
        if row is not None:
            sketch = merge_sketches([hll_sketch.deserialize(row[0]), sketch])
        con.execute(
            "insert or replace into minute_users (minute_start, sketch) values (?, ?)",
            [minute, sketch.serialize_compact()],
        )
    con.executemany(
        "insert or ignore into seen_messages (message_id, event_at) values (?, ?)",
        fold.seen.items(),
    )
    con.executemany(
        """
        insert into counters (name, value) values (?, ?)
        on conflict (name) do update set value = value + excluded.value
        """,
        fold.counters.items(),
    )
    con.executemany(
        "insert or replace into segment_offsets (segment, offset) values (?, ?)",
        new_offsets.items(),
    )
    if fold.max_event_at is not None:
        con.execute(
            "insert or replace into state (name, value) values (?, ?)",
            [MAX_EVENT_AT, fold.max_event_at],
        )
        _apply_retention(con, fold.max_event_at, retention_days)


def _apply_retention(con: sqlite3.Connection, newest: float, retention_days: int) -> None:
    keep_from = newest - retention_days * 86400
    con.execute("delete from minute_events where minute_start < ?", [keep_from])
    con.execute("delete from minute_users where minute_start < ?", [keep_from])
    con.execute("delete from seen_messages where event_at < ?", [newest - DEDUP_HORIZON_SECONDS])
