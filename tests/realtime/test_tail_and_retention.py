"""The worker on segment files as ``sluice serve`` leaves them: whole lines only, an offset
that survives the rename from open to closed, bad lines counted, and retention."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import duckdb
import pytest

from common.settings import CURRENCY_RATES_SEED, Settings
from realtime import read, store
from realtime.revenue import load_rates, order_revenue_usd
from realtime.tail import SegmentTail
from realtime.worker import StreamWorker, WorkerLocked

SLUICE = str(Path(sys.executable).with_name("sluice"))
DAY = dt.datetime(2026, 3, 1, 10, tzinfo=dt.UTC)


def _line(n: int, at: dt.datetime, **extra: Any) -> bytes:
    message = {"type": "page", "userId": f"u{n}", "messageId": f"m{n}", "timestamp": at.isoformat()}
    return json.dumps({**message, **extra}).encode() + b"\n"


def _segment(settings: Settings, stem: str) -> Path:
    folder = settings.api_sources_dir / "web"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{stem}.jsonl.tmp"


def test_whole_lines_only_and_the_offset_follows_the_rename(make_settings) -> None:  # type: ignore[no-untyped-def]
    settings: Settings = make_settings(DAY.date())
    path = _segment(settings, "20260301T100000000000-1-000001")
    torn = _line(2, DAY)
    path.write_bytes(_line(1, DAY) + b"{not json\n" + torn[:10])
    with StreamWorker(settings) as worker:
        assert worker.run_once() == 1
        with pytest.raises(WorkerLocked):
            StreamWorker(settings)
        # The writer finishes the line, then closes the segment.
        with path.open("ab") as handle:
            handle.write(torn[10:] + _line(1, DAY))  # and a copy of the first message
        path.rename(path.with_name(path.name.removesuffix(".tmp")))
        assert worker.run_once() == 1
        assert worker.run_once() == 0
    counters = read.counters(settings.realtime_store_path)
    assert counters == {
        "added": 2,
        "duplicates": 1,
        "invalid: malformed JSON": 1,
        "lines": 4,
    }
    figures = read.total(settings.realtime_store_path, DAY, DAY + dt.timedelta(minutes=1))
    assert (figures.events, figures.events_by_name, round(figures.active_users)) == (
        2,
        {"page": 2},
        2,
    )


def test_minute_windows_past_the_retention_are_deleted(make_settings) -> None:  # type: ignore[no-untyped-def]
    settings: Settings = make_settings(DAY.date(), SLUICE_REALTIME_RETENTION_DAYS="2")
    assert settings.realtime_retention_days == 2
    _segment(settings, "a").write_bytes(_line(1, DAY) + _line(2, DAY + dt.timedelta(days=1)))
    later = DAY + dt.timedelta(days=2, minutes=1)
    _segment(settings, "b").write_bytes(_line(3, later) + _line(4, DAY))
    printed = subprocess.run(
        [SLUICE, "stream", "--once"], capture_output=True, text=True, check=True
    ).stdout
    assert "read 4 lines from 2 segments: 3 added, 0 duplicates, 1 late, 0 invalid" in printed
    path = settings.realtime_store_path
    minutes = read.windows(path, DAY - dt.timedelta(days=1), later + dt.timedelta(days=1))
    assert [f.start for f in minutes] == [
        DAY + dt.timedelta(days=1),
        later.replace(second=0),
    ]
    # The dedup horizon is a day of event time: the first day's ids are forgotten too.
    with store.connect(path) as con:
        assert {row[0] for row in con.execute("select message_id from seen_messages")} == {"m3"}


@pytest.mark.parametrize(
    "properties",
    [
        {"revenue": 10.5},
        {"revenue": "12", "currency": " eur "},
        {"total": "3.5", "currency": "GBP"},
        {"revenue": None, "total": 8, "currency": "JPY"},
        {"revenue": "n/a", "currency": "CHF"},
        {"revenue": True},
        {"currency": "XYZ", "revenue": 5},
        {},
    ],
)
def test_revenue_follows_the_staging_model(properties: dict[str, Any]) -> None:
    """The rule of dbt_project/models/staging/stg_events.sql, evaluated by DuckDB."""
    sql = """
        with message as (select cast(? as json) as properties),
        priced as (
            select
                coalesce(
                    try_cast(json_extract_string(properties, '$."revenue"') as double),
                    try_cast(json_extract_string(properties, '$."total"') as double)
                ) as revenue,
                coalesce(
                    upper(nullif(trim(json_extract_string(properties, '$."currency"')), '')),
                    'USD'
                ) as currency
            from message
        )
        select coalesce(revenue, 0) * rates.usd_per_unit
        from priced left join read_csv(?) as rates on priced.currency = rates.currency
    """
    row = duckdb.execute(sql, [json.dumps(properties), str(CURRENCY_RATES_SEED)]).fetchone()
    assert row is not None
    assert order_revenue_usd(properties, load_rates()) == pytest.approx(row[0])


def test_an_event_from_the_future_moves_the_watermark_only_to_its_arrival(make_settings) -> None:  # type: ignore[no-untyped-def]
    """The API takes timestamps up to a day ahead; such an event must not make the others late."""
    settings: Settings = make_settings(DAY.date())
    received = {"receivedAt": (DAY + dt.timedelta(minutes=1)).isoformat()}
    ahead = DAY + dt.timedelta(hours=20)
    _segment(settings, "a").write_bytes(
        _line(1, ahead, **received)
        + _line(2, DAY, **received)
        + _line(3, DAY - dt.timedelta(hours=1), **received)
    )
    with StreamWorker(settings) as worker:
        worker.run_once()
    counters = read.counters(settings.realtime_store_path)
    assert (counters["added"], counters["late"]) == (2, 1)


def test_a_backlog_of_several_sources_is_read_in_time_order(make_settings) -> None:  # type: ignore[no-untyped-def]
    """Ten minutes of two write keys' segments, waiting for a worker: read side by side in
    time, none of them is late (read source by source, the second's first minutes were)."""
    settings: Settings = make_settings(DAY.date())
    n = 0
    for source in ("web", "ios"):
        folder = settings.api_sources_dir / source
        folder.mkdir(parents=True, exist_ok=True)
        for minute in range(10):
            at = DAY + dt.timedelta(minutes=minute)
            lines = []
            for second in range(0, 60, 3):
                n += 1
                lines.append(_line(n, at + dt.timedelta(seconds=second)))
            stem = f"{at:%Y%m%dT%H%M%S}000000-1-{minute:06d}"
            (folder / f"{stem}.jsonl").write_bytes(b"".join(lines))
    with StreamWorker(settings) as worker:
        worker.run_once()
    counters = read.counters(settings.realtime_store_path)
    assert (counters["added"], counters.get("late", 0)) == (n, 0)


def test_a_segment_cut_by_the_budget_is_finished_before_later_ones() -> None:
    with tempfile.TemporaryDirectory() as folder:
        sources = Path(folder)
        (sources / "web").mkdir()
        (sources / "ios").mkdir()
        first = b"".join(_line(n, DAY) for n in range(10))
        (sources / "web" / "20260301T100000000000-1-000001.jsonl").write_bytes(first)
        later = _line(99, DAY + dt.timedelta(minutes=9))
        (sources / "ios" / "20260301T100900000000-1-000001.jsonl").write_bytes(later)
        tail = SegmentTail(sources)
        budget = len(first) // 2
        chunks = tail.read({}, budget)
        assert [chunk.segment for chunk in chunks] == ["web/20260301T100000000000-1-000001"]
        offsets = {chunks[0].segment: chunks[0].end}
        rest = tail.read(offsets, len(first))
        assert [chunk.segment for chunk in rest] == [
            "web/20260301T100000000000-1-000001",
            "ios/20260301T100900000000-1-000001",
        ]
        assert rest[0].end == len(first)
