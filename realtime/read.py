"""Read the real-time store while ``sluice stream`` writes it: figures per minute, per
5 minutes or hour, for a time range, and for today so far, the newest event time and the
worker's counters.

A figure of several minutes adds their events, orders and revenue and unions their user
sketches, so a user active in two minutes counts once (an estimate within about 1%: HLL,
``lg_k`` 14). Times are UTC; a range is half-open, ``[start, end)``, in whole minutes.
Opens the store read-only (SQLite WAL lets it while the worker writes). Reads no environment.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from datasketches import hll_sketch

from realtime import store
from realtime.windows import MINUTE_SECONDS, merge_sketches, utc

FIVE_MINUTES = dt.timedelta(minutes=5)
HOUR = dt.timedelta(hours=1)
# A worker whose heartbeat is older than this is not running (it beats at least every 5 s).
STALE_SECONDS = 15.0


@dataclass(frozen=True)
class Figures:
    """The events of ``[start, end)``."""

    start: dt.datetime
    end: dt.datetime
    events: int
    orders: int
    revenue_usd: float
    active_users: float  # the HLL estimate
    events_by_name: dict[str, int] = field(default_factory=dict)


@dataclass
class _Bucket:
    events_by_name: Counter[str] = field(default_factory=Counter)
    orders: int = 0
    revenue_usd: float = 0.0
    sketches: list[hll_sketch] = field(default_factory=list)

    def figures(self, start: dt.datetime, end: dt.datetime) -> Figures:
        users = merge_sketches(self.sketches).get_estimate() if self.sketches else 0.0
        return Figures(
            start=start,
            end=end,
            events=sum(self.events_by_name.values()),
            orders=self.orders,
            revenue_usd=self.revenue_usd,
            active_users=users,
            events_by_name=dict(sorted(self.events_by_name.items())),
        )


def _seconds(moment: dt.datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError(f"{moment} has no time zone; give UTC times")
    return int(moment.timestamp())


def windows(
    path: Path,
    start: dt.datetime,
    end: dt.datetime,
    size: dt.timedelta = dt.timedelta(minutes=1),
) -> list[Figures]:
    """Figures per window of ``size`` (a whole number of minutes, windows aligned to UTC
    midnight) in ``[start, end)``, for the windows that have events."""
    width = int(size.total_seconds())
    if width <= 0 or width % MINUTE_SECONDS or 86400 % width:
        raise ValueError(f"a window is a whole number of minutes that divides a day, not {size}")
    buckets = _buckets(path, _seconds(start), _seconds(end), width)
    return [buckets[key].figures(utc(key), utc(key + width)) for key in sorted(buckets)]


def _buckets(path: Path, first: int, last: int, width: int) -> dict[int, _Bucket]:
    """The minutes of ``[first, last)`` merged into windows of ``width`` seconds."""
    with contextlib.closing(store.connect(path, read_only=True)) as con:
        con.execute("begin")  # one snapshot for both tables
        rows = con.execute(
            "select minute_start, event_name, events, orders, revenue_usd from minute_events "
            "where minute_start >= ? and minute_start < ?",
            [first, last],
        ).fetchall()
        sketches = con.execute(
            "select minute_start, sketch from minute_users "
            "where minute_start >= ? and minute_start < ?",
            [first, last],
        ).fetchall()
        con.execute("commit")
    buckets: dict[int, _Bucket] = {}
    for minute, name, events, orders, revenue in rows:
        bucket = buckets.setdefault(minute - minute % width, _Bucket())
        bucket.events_by_name[name] += events
        bucket.orders += orders
        bucket.revenue_usd += revenue
    for minute, blob in sketches:
        bucket = buckets.setdefault(minute - minute % width, _Bucket())
        bucket.sketches.append(hll_sketch.deserialize(blob))
    return buckets


def total(path: Path, start: dt.datetime, end: dt.datetime) -> Figures:
    """One figure for all of ``[start, end)``: users active in it, each once."""
    whole = _Bucket()
    for minute in _buckets(path, _seconds(start), _seconds(end), MINUTE_SECONDS).values():
        whole.events_by_name.update(minute.events_by_name)
        whole.orders += minute.orders
        whole.revenue_usd += minute.revenue_usd
        whole.sketches.extend(minute.sketches)
    return whole.figures(start, end)


def today_so_far(path: Path, now: dt.datetime | None = None) -> Figures:
    """The UTC day of ``now`` (default: the clock) from midnight up to the minute after it."""
    now = now or dt.datetime.now(dt.UTC)
    midnight = dt.datetime.combine(now.astimezone(dt.UTC).date(), dt.time(), dt.UTC)
    end = utc(((_seconds(now) // MINUTE_SECONDS) + 1) * MINUTE_SECONDS)
    return total(path, midnight, end)


def newest_event_at(path: Path) -> dt.datetime | None:
    """The newest event time the worker has seen (each capped at its ``receivedAt``); None
    before the first event."""
    with contextlib.closing(store.connect(path, read_only=True)) as con:
        newest = store.max_event_at(con)
    return None if newest is None else utc(newest)


@dataclass(frozen=True)
class Processed:
    """What the worker committed in a range of (processing-time) minutes."""

    lines: int
    added: int
    duplicates: int
    late: int
    invalid: int


def processed(path: Path, start: dt.datetime, end: dt.datetime) -> Processed:
    """The lines the worker committed in the minutes of ``[start, end)``, by outcome: the
    figures of "what is arriving now" (a rejected share, a stalled stream), whatever the
    events' own times."""
    with contextlib.closing(store.connect(path, read_only=True)) as con:
        rows = dict(
            con.execute(
                "select name, sum(value) from minute_processed "
                "where minute_start >= ? and minute_start < ? group by name",
                [_seconds(start), _seconds(end)],
            ).fetchall()
        )
    return Processed(**{name: int(rows.get(name) or 0) for name in Processed.__dataclass_fields__})


@dataclass(frozen=True)
class Lag:
    """Ack-to-visible lag of the events committed in a range: the time from the ingest API's
    ``receivedAt`` to the commit that made the event readable here. Quantiles are read off
    the histogram (``store.LAG_BUCKETS``) by linear interpolation within a bucket, as
    Prometheus' ``histogram_quantile`` does; None without events."""

    events: int
    mean: float | None
    p50: float | None
    p95: float | None


def histogram_quantile(q: float, buckets: dict[int, int]) -> float | None:
    """The ``q`` quantile of events counted per ``store.LAG_BUCKETS`` index."""
    total = sum(buckets.values())
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for index, upper in enumerate(store.LAG_BUCKETS):
        count = buckets.get(index, 0)
        if count and seen + count >= rank:
            lower = store.LAG_BUCKETS[index - 1] if index else 0.0
            if upper == float("inf"):
                return lower
            return lower + (upper - lower) * (rank - seen) / count
        seen += count
    return None


def _lag_buckets(con: sqlite3.Connection, start: dt.datetime, end: dt.datetime) -> dict[int, int]:
    return dict(
        con.execute(
            "select bucket, sum(events) from minute_lag "
            "where minute_start >= ? and minute_start < ? group by bucket",
            [_seconds(start), _seconds(end)],
        ).fetchall()
    )


def lag_buckets(path: Path, start: dt.datetime, end: dt.datetime) -> dict[int, int]:
    """The events committed in the minutes of ``[start, end)`` per ``store.LAG_BUCKETS``
    index (an SLO counts those within a bound)."""
    with contextlib.closing(store.connect(path, read_only=True)) as con:
        return _lag_buckets(con, start, end)


def lag(path: Path, start: dt.datetime, end: dt.datetime) -> Lag:
    """The lag of the events committed in the minutes of ``[start, end)``."""
    with contextlib.closing(store.connect(path, read_only=True)) as con:
        buckets = _lag_buckets(con, start, end)
        lag_ms = con.execute(
            "select sum(value) from minute_processed "
            "where name = ? and minute_start >= ? and minute_start < ?",
            [store.LAG_MS, _seconds(start), _seconds(end)],
        ).fetchone()[0]
    events = sum(buckets.values())
    return Lag(
        events=events,
        mean=(lag_ms or 0) / 1000 / events if events else None,
        p50=histogram_quantile(0.5, buckets),
        p95=histogram_quantile(0.95, buckets),
    )


def lag_histogram(path: Path) -> tuple[dict[int, int], float]:
    """Events per lag bucket since the store began, and the sum of their lags in seconds:
    the figures of ``/metrics``' histogram."""
    with contextlib.closing(store.connect(path, read_only=True)) as con:
        buckets = dict(con.execute("select bucket, events from lag_buckets").fetchall())
        row = con.execute(
            "select value from state where name = ?", [store.LAG_SECONDS_SUM]
        ).fetchone()
    return buckets, 0.0 if row is None else float(row[0])


def heartbeat(path: Path) -> float | None:
    """When the worker last committed or looked for work (seconds since the epoch); None
    before it first did."""
    with contextlib.closing(store.connect(path, read_only=True)) as con:
        return store.heartbeat_at(con)


def late_by_day(path: Path, day: dt.date) -> int:
    """Late events (older than the watermark, left to the batch tier) whose event time falls
    on the UTC ``day``."""
    midnight = int(dt.datetime.combine(day, dt.time(), dt.UTC).timestamp())
    with contextlib.closing(store.connect(path, read_only=True)) as con:
        row = con.execute("select late from late_days where day_start = ?", [midnight]).fetchone()
    return 0 if row is None else int(row[0])


def counters(path: Path) -> dict[str, int]:
    """The worker's counts so far: lines, added, duplicates, late, invalid by rule, ..."""
    with contextlib.closing(store.connect(path, read_only=True)) as con:
        return store.counters(con)
