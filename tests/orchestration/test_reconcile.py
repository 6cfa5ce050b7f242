"""The real-time tier reconciled with the marts, per day, as a Dagster asset check: real
generated events in the ingest API's landing segments, read by the real stream worker and
loaded and built by real Dagster runs (one range run, then single partitions).

The days are generated up to yesterday; the newest of them is still open in the real-time
tier (its watermark has not passed midnight), so it passes as not covered.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from common.contract import TimestampParser
from common.settings import Settings, load_settings
from ingestion.generator import generate
from orchestration.transform.reconcile import (
    CHECK_NAME,
    DAU_KEY,
    EVENTS_KEY,
    REVENUE_KEY,
    BatchDay,
    not_covered_because,
)
from realtime import read, store
from realtime.revenue import load_rates
from realtime.windows import fold, parse_lines
from realtime.worker import StreamWorker
from sluice.runs import RunOutcome, materialize_range, run_job

pytestmark = pytest.mark.slow

DAYS = 3
LAST = dt.date.today() - dt.timedelta(days=1)
FIRST = LAST - dt.timedelta(days=DAYS - 1)
MARTS = (DAU_KEY, EVENTS_KEY, REVENUE_KEY)


@dataclass(frozen=True)
class Streamed:
    settings: Settings
    range_run: RunOutcome


@pytest.fixture(scope="module")
def streamed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Streamed]:
    """Generated days written as closed segments of a source, as `sluice serve` leaves them,
    folded by the stream worker, then loaded and built in one range run."""
    data_dir = tmp_path_factory.mktemp("reconcile") / "data"
    env = {"SLUICE_DATA_DIR": str(data_dir), "SLUICE_START_DATE": FIRST.isoformat()}
    settings = load_settings(env)
    with pytest.MonkeyPatch.context() as patch:
        for key, value in {**env, **settings.subprocess_env()}.items():
            patch.setenv(key, value)
        generated = data_dir.parent / "generated"
        generate(generated, FIRST, DAYS, 400, seed=5)
        segments = settings.api_sources_dir / "web"
        segments.mkdir(parents=True)
        for path in sorted(generated.glob("*.jsonl")):
            shutil.move(path, segments / path.name)
        with StreamWorker(settings) as worker:
            assert worker.run_once() > 0
        outcome = materialize_range(settings, FIRST, LAST)
        assert outcome.success, outcome.message
        yield Streamed(settings, outcome)


def evaluations(settings: Settings, outcome: RunOutcome) -> dict[tuple[str, str], Any]:
    """(mart, day) -> the check's evaluation in the run."""
    with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        records = instance.all_logs(
            outcome.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
        )
    out = {}
    for record in records:
        evaluation = record.dagster_event.event_specific_data
        if evaluation.check_name == CHECK_NAME:
            out[evaluation.asset_key.to_user_string(), evaluation.partition] = evaluation
    return out


def statuses(settings: Settings, key: dg.AssetKey) -> dict[str, str]:
    """Partition -> the check's latest status, as the UI shows it per partition."""
    with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        infos = instance.event_log_storage.get_asset_check_partition_info(
            [dg.AssetCheckKey(key, CHECK_NAME)]
        )
    return {info.partition_key: info.latest_execution_status.value for info in infos}


def values(evaluation: Any) -> dict[str, Any]:
    return {name: getattr(v, "value", v) for name, v in evaluation.metadata.items()}


def test_each_day_of_a_range_run_reconciles_and_the_open_day_is_not_covered(
    streamed: Streamed,
) -> None:
    got = evaluations(streamed.settings, streamed.range_run)
    days = [(FIRST + dt.timedelta(days=n)).isoformat() for n in range(DAYS)]
    assert set(got) == {(key.to_user_string(), day) for key in MARTS for day in days}
    for (mart, day), evaluation in got.items():
        meta = values(evaluation)
        assert evaluation.passed, (mart, day, evaluation.description, meta)
        assert meta["day"] == day
        if day == LAST.isoformat():
            assert meta["covered"] is False
            assert "not closed the day" in meta["reason"]
            assert evaluation.description.startswith("not covered")
        else:
            assert meta["covered"] is True, (mart, day, meta)
    for key in MARTS:
        assert statuses(streamed.settings, key) == dict.fromkeys(days, "SUCCEEDED")
    # The covered days compared real figures, not two zeros.
    first = values(got[EVENTS_KEY.to_user_string(), FIRST.isoformat()])
    assert first["events_marts"] > 100
    assert 0 <= first["events_difference"] <= first["late_events"]
    money = values(got[REVENUE_KEY.to_user_string(), FIRST.isoformat()])
    assert money["orders_marts"] > 0
    users = values(got[DAU_KEY.to_user_string(), FIRST.isoformat()])
    assert users["active_users_marts"] > 50
    allowed = users["active_users_allowed_difference"] + users["late_events"]
    assert abs(users["active_users_difference"]) <= allowed


@contextlib.contextmanager
def store_moved_away(settings: Settings) -> Iterator[None]:
    folder = settings.realtime_store_path.parent
    aside = folder.with_name("realtime-aside")
    folder.rename(aside)
    try:
        yield
    finally:
        aside.rename(folder)


def test_without_a_real_time_store_the_check_passes_as_not_covered(streamed: Streamed) -> None:
    settings = streamed.settings
    day = FIRST.isoformat()
    with store_moved_away(settings):
        outcome = run_job(settings, "build", {"dagster/partition": day})
    assert outcome.success, outcome.message
    got = evaluations(settings, outcome)
    assert set(got) == {(key.to_user_string(), day) for key in MARTS}
    for evaluation in got.values():
        assert evaluation.passed
        meta = values(evaluation)
        assert meta["covered"] is False
        assert "sluice stream` has never run" in meta["reason"]


def test_days_past_retention_or_with_batch_files_are_not_covered(streamed: Streamed) -> None:
    settings = streamed.settings
    clean = BatchDay(events_by_name={"Page Viewed": 10})
    assert not_covered_because(settings, FIRST, clean) is None
    old = LAST - dt.timedelta(days=settings.realtime_retention_days + 1)
    assert "SLUICE_REALTIME_RETENTION_DAYS" in (not_covered_because(settings, old, clean) or "")
    dropped = BatchDay(events_by_name={"Page Viewed": 10}, events_outside_sources=4)
    reason = not_covered_because(settings, FIRST, dropped) or ""
    assert "4 events of the day came from landing files outside" in reason


def planted_orders(settings: Settings, day: dt.date, count: int) -> list[bytes]:
    """``count`` orders of ``day`` that the batch tier never saw: copies of a real order line
    of that day under new messageIds."""
    template = None
    for path in sorted(settings.api_sources_dir.glob("*/*.jsonl")):
        for line in path.read_bytes().splitlines():
            with contextlib.suppress(ValueError):
                doc = json.loads(line)
                if (
                    isinstance(doc, dict)
                    and isinstance(doc.get("properties"), dict)
                    and doc.get("event") == "Order Completed"
                    and doc["timestamp"].startswith(day.isoformat())
                    and "revenue" in doc["properties"]
                ):
                    template = doc
                    break
        if template:
            break
    assert template is not None, "no order of that day to copy"
    return [
        json.dumps({**template, "messageId": f"planted-{n}"}).encode() + b"\n" for n in range(count)
    ]


def test_events_and_revenue_the_marts_do_not_have_fail_the_day_with_error(
    streamed: Streamed,
) -> None:
    settings = streamed.settings
    day = FIRST
    path: Path = settings.realtime_store_path
    # More than the day's late events, which could otherwise make up for them.
    planted = read.late_by_day(path, day) + 3
    lines = planted_orders(settings, day, planted)
    # Through the store's own commit path, as the worker writes a batch (never late here).
    con = store.connect(path)
    try:
        folded = fold(
            parse_lines(b"".join(lines), TimestampParser(), load_rates()),
            already_seen=set(),
            max_event_at=store.max_event_at(con),
            lateness_seconds=10**9,
        )
        store.commit(con, folded, {}, settings.realtime_retention_days)
    finally:
        con.close()

    outcome = run_job(settings, "build", {"dagster/partition": day.isoformat()})
    assert outcome.success, outcome.message  # a check's failure does not fail the run
    got = evaluations(settings, outcome)
    events = got[EVENTS_KEY.to_user_string(), day.isoformat()]
    assert not events.passed
    assert events.severity == dg.AssetCheckSeverity.ERROR
    assert "the real-time tier is higher (Order Completed)" in events.description
    meta = values(events)
    assert meta["events_difference"] == meta["events_marts"] - meta["events_real_time"]
    assert meta["events_difference"] < 0
    assert "Order Completed" in meta["names_higher_in_real_time"]
    assert "late_events" in meta

    revenue = got[REVENUE_KEY.to_user_string(), day.isoformat()]
    assert not revenue.passed
    assert revenue.severity == dg.AssetCheckSeverity.ERROR
    money = values(revenue)
    assert money["orders_real_time"] - money["orders_marts"] >= planted - money["late_events"]
    assert money["revenue_usd_difference"] < 0
    # The users are the same people: within the sketch's bound still.
    assert got[DAU_KEY.to_user_string(), day.isoformat()].passed
    # Only that day's result changed.
    assert statuses(settings, EVENTS_KEY) == {
        (FIRST + dt.timedelta(days=n)).isoformat(): "FAILED" if n == 0 else "SUCCEEDED"
        for n in range(DAYS)
    }
