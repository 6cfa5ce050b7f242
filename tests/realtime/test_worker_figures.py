"""The worker's own figures, by the minute it committed them: what it processed, the
ack-to-visible lag, the late events of each day and its heartbeat."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import pytest

from common.settings import Settings
from realtime import read, store
from realtime.worker import StreamWorker

DAY = dt.datetime(2026, 3, 1, 10, tzinfo=dt.UTC)


def _line(n: int, at: dt.datetime, received: dt.datetime | None = None, **extra: Any) -> bytes:
    message = {
        "type": "page",
        "userId": f"u{n}",
        "messageId": f"m{n}",
        "timestamp": at.isoformat(),
        **({"receivedAt": received.isoformat()} if received else {}),
    }
    return json.dumps({**message, **extra}).encode() + b"\n"


def _segment(settings: Settings, stem: str) -> Path:
    folder = settings.api_sources_dir / "web"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{stem}.jsonl"


def test_processed_lag_late_days_and_heartbeat(make_settings) -> None:  # type: ignore[no-untyped-def]
    settings: Settings = make_settings(DAY.date(), SLUICE_REALTIME_LATENESS_SECONDS="60")
    path = settings.realtime_store_path
    now = time.time()
    received = dt.datetime.fromtimestamp(now, dt.UTC)
    lines = [
        # Received 2 s and 40 s before the commit: two lags.
        _line(1, DAY, received - dt.timedelta(seconds=2)),
        _line(2, DAY + dt.timedelta(minutes=5), received - dt.timedelta(seconds=40)),
        _line(2, DAY + dt.timedelta(minutes=5), received),  # a copy
        # Ten minutes older than the newest: late, on the day of its event time.
        _line(3, DAY - dt.timedelta(hours=11), received),
        b"{not json\n",
    ]
    _segment(settings, "a").write_bytes(b"".join(lines))
    started = time.time()
    with StreamWorker(settings) as worker:
        assert worker.run_once() == 1
    finished = time.time()

    minute = dt.datetime.fromtimestamp(started // 60 * 60, dt.UTC)
    window = (minute - dt.timedelta(minutes=1), minute + dt.timedelta(minutes=2))
    assert read.processed(path, *window) == read.Processed(
        lines=5, added=2, duplicates=1, late=1, invalid=1
    )
    assert read.processed(path, DAY, DAY + dt.timedelta(minutes=1)) == read.Processed(0, 0, 0, 0, 0)

    lag = read.lag(path, *window)
    assert lag.events == 2
    assert lag.mean is not None
    assert 21 - 0.01 <= lag.mean <= 21 + (finished - now) + 0.01
    # Quantiles come from the histogram: within the buckets around 2 s and 40 s.
    assert lag.p50 is not None and 1.5 <= lag.p50 <= 3.0
    assert lag.p95 is not None and 30.0 <= lag.p95 <= 60.0
    buckets, total = read.lag_histogram(path)
    assert sum(buckets.values()) == 2
    assert buckets[store.lag_bucket(2.0 + (finished - now))] >= 1
    assert total == pytest.approx(lag.mean * 2, abs=0.01)

    assert read.late_by_day(path, (DAY - dt.timedelta(hours=11)).date()) == 1
    assert read.late_by_day(path, DAY.date()) == 0

    beat = read.heartbeat(path)
    assert beat is not None and started - 1 <= beat <= finished + 1


def test_an_idle_worker_beats_and_a_stopped_one_goes_stale(make_settings) -> None:  # type: ignore[no-untyped-def]
    settings: Settings = make_settings(DAY.date())
    with StreamWorker(settings):
        first = read.heartbeat(settings.realtime_store_path)
    assert first is not None and time.time() - first < read.STALE_SECONDS
    with contextlib.closing(store.connect(settings.realtime_store_path)) as con:
        store.beat(con, first - 100)
    beat = read.heartbeat(settings.realtime_store_path)
    assert beat is not None and time.time() - beat > read.STALE_SECONDS


def test_histogram_quantile_interpolates_within_a_bucket() -> None:
    one = store.lag_bucket(1.0)
    assert store.LAG_BUCKETS[one] == 1.0
    # 10 events between 0.75 and 1 s: the median is halfway.
    assert read.histogram_quantile(0.5, {one: 10}) == pytest.approx(0.875)
    assert read.histogram_quantile(0.5, {}) is None
    last = len(store.LAG_BUCKETS) - 1
    assert read.histogram_quantile(0.95, {0: 1, last: 99}) == store.LAG_BUCKETS[last - 1]
