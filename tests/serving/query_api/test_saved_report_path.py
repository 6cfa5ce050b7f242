"""The saved reports' short path: a report's scan estimate is taken once per snapshot and
taken again on a new one (and still checked), one watchdog thread times every query and a
cursor that was interrupted is never used again, and a cached report answers the JSON
encoded at its first hit, following edits of the report file and new snapshots."""

from __future__ import annotations

import datetime as dt
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import duckdb
import httpx
import orjson
import pytest

from common.keys import KeyStore
from common.settings import REPORTS_DIR, Settings, load_settings
from serving.query_api import QueryApi
from serving.query_runner import QueryLimits, SharedSnapshot, _Watchdog
from serving.snapshot import publish_snapshot
from serving.sql_guard import QueryRefused
from tests.serving.query_api.conftest import FIRST, LIMITS, TODAY, build_warehouse, serve_in_thread

DAU_SQL = "select sum(active_users) from marts.dau where event_date between $start and $end"
FOREVER = (
    "with recursive forever(n) as (select 1 union all select n + 1 from forever) "
    "select count(*) from forever"
)


def _window(back: int) -> dict[str, dt.date]:
    end = TODAY - dt.timedelta(days=back)
    return {"start": end - dt.timedelta(days=6), "end": end}


@pytest.fixture
def snapshot(tmp_path: Path) -> tuple[Path, Path]:
    warehouse, snapshot = tmp_path / "warehouse.duckdb", tmp_path / "snapshot.duckdb"
    build_warehouse(warehouse)
    publish_snapshot(warehouse, snapshot, "run-one")
    return warehouse, snapshot


def _double_dau(warehouse: Path) -> None:
    """Twice the rows in marts.dau, on days before the others."""
    with duckdb.connect(str(warehouse)) as con:
        con.execute(
            "insert into marts.dau select * replace (event_date - interval 400 day as event_date) "
            "from marts.dau"
        )


def test_a_saved_reports_scan_estimate_is_kept_per_snapshot_and_taken_again_on_a_new_one(
    snapshot: tuple[Path, Path],
) -> None:
    warehouse, path = snapshot
    adhoc = SharedSnapshot(path, QueryLimits(max_scan_rows=10**10))
    kept = SharedSnapshot(path, QueryLimits(max_scan_rows=10**10), keep_estimates=True)
    try:
        first = adhoc.run(DAU_SQL, _window(0)).scanned_rows
        assert first > 0
        answers = [kept.run(DAU_SQL, _window(back)) for back in range(5)]
        # The kept estimate is what EXPLAIN says on every run, whatever the window.
        assert {answer.scanned_rows for answer in answers} == {first}
        assert kept._current is not None and len(kept._current.estimates) == 1
        assert adhoc._current is not None and adhoc._current.estimates == {}
        # Exactly as high as the first snapshot's estimate: allowed there.
        limited = SharedSnapshot(path, QueryLimits(max_scan_rows=first), keep_estimates=True)
        try:
            assert limited.run(DAU_SQL, _window(0)).run_id == "run-one"
            _double_dau(warehouse)
            publish_snapshot(warehouse, path, "run-two")
            # A new snapshot: its estimate is taken again, and is over the limit now.
            with pytest.raises(QueryRefused) as refused:
                limited.run(DAU_SQL, _window(0))
            assert refused.value.limit == "scan_limit"
        finally:
            limited.close()
        grown = kept.run(DAU_SQL, _window(0))
        assert grown.run_id == "run-two"
        assert grown.scanned_rows == adhoc.run(DAU_SQL, _window(0)).scanned_rows > first
        assert grown.rows == answers[0].rows  # the added days are outside the window
    finally:
        adhoc.close()
        kept.close()


def test_an_estimate_of_zero_from_a_window_outside_the_data_is_not_kept(
    snapshot: tuple[Path, Path],
) -> None:
    """A report first asked for days before the data: EXPLAIN says 0 rows (the zone maps
    rule the window out). Kept, every later window would be checked and charged as 0."""
    _warehouse, path = snapshot
    adhoc = SharedSnapshot(path, QueryLimits(max_scan_rows=10**10))
    kept = SharedSnapshot(path, QueryLimits(max_scan_rows=10**10), keep_estimates=True)
    try:
        before_data = {
            "start": FIRST - dt.timedelta(days=400),
            "end": FIRST - dt.timedelta(days=300),
        }
        assert kept.run(DAU_SQL, before_data).scanned_rows == 0
        assert kept._current is not None and kept._current.estimates == {}
        assert (
            kept.run(DAU_SQL, _window(0)).scanned_rows
            == adhoc.run(DAU_SQL, _window(0)).scanned_rows
            > 0
        )
        assert len(kept._current.estimates) == 1
    finally:
        adhoc.close()
        kept.close()


def test_one_watchdog_times_out_queries_on_several_threads_and_drops_their_cursors(
    snapshot: tuple[Path, Path],
) -> None:
    _, path = snapshot
    reader = SharedSnapshot(path, QueryLimits(timeout_seconds=0.5), keep_estimates=True)
    limits: list[str] = []

    def forever() -> None:
        try:
            reader.run(FOREVER)
        except QueryRefused as error:
            limits.append(error.limit)

    try:
        threads = [threading.Thread(target=forever) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert limits == ["timeout", "timeout"]
        assert reader._current is not None and reader._current.idle == []
        # Quick queries under the same watchdog are not cut, and share one kept cursor.
        sums = {reader.run(DAU_SQL, _window(back % 30)).rows[0][0] for back in range(100)}
        assert len(sums) > 1
        assert len(reader._current.idle) == 1
        watchdogs = [t for t in threading.enumerate() if t.name == "sluice-query-watchdog"]
        assert watchdogs
    finally:
        reader.close()


def test_the_watchdog_calls_what_is_due_in_order_skips_what_is_cancelled_and_outlives_errors() -> (
    None
):
    watchdog = _Watchdog()
    called: list[str] = []
    done = threading.Event()

    def fail() -> None:
        called.append("fail")
        raise RuntimeError("interrupt of a closed cursor")

    try:
        late = watchdog.start(0.3, lambda: (called.append("late"), done.set()))
        cancelled = watchdog.start(0.1, lambda: called.append("cancelled"))
        watchdog.start(0.05, fail)
        assert watchdog.cancel(cancelled) is True
        assert done.wait(10)
        assert called == ["fail", "late"]
        assert watchdog.cancel(late) is False  # already called
    finally:
        watchdog.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[httpx.Client, Settings, Path]]:
    env = {"SLUICE_DATA_DIR": str(tmp_path / "data"), "SLUICE_START_DATE": FIRST.isoformat()}
    settings = load_settings(env | LIMITS)
    build_warehouse(settings.warehouse_path)
    publish_snapshot(settings.warehouse_path, settings.serving_path, "run-one")
    reports = tmp_path / "reports"
    reports.mkdir()
    shutil.copy(REPORTS_DIR / "daily_summary.yml", reports)
    key = KeyStore(settings.api_keys_path).create("reader", kind="read")
    api = QueryApi(settings, KeyStore(settings.api_keys_path), reports_dir=reports)
    with serve_in_thread(api) as url:
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
            yield http, settings, reports


def test_a_cached_report_answers_its_first_hits_json_and_follows_edits_and_snapshots(
    served: tuple[httpx.Client, Settings, Path],
) -> None:
    http, settings, reports = served
    params = {"start": str(FIRST), "end": str(TODAY - dt.timedelta(days=1))}

    def get() -> httpx.Response:
        answer = http.get("/v1/reports/daily_summary", params=params)
        assert answer.status_code == 200, answer.text
        return answer

    miss, hit, again = get(), get(), get()
    assert [a.headers["x-sluice-cache"] for a in (miss, hit, again)] == ["miss", "hit", "hit"]
    assert orjson.loads(hit.content) == orjson.loads(miss.content) | {"cached": True}
    assert again.content == hit.content
    assert orjson.loads(again.content)["snapshot"]["run_id"] == "run-one"

    # A new description in the report's file: read again, the cached rows answered with it.
    path = reports / "daily_summary.yml"
    text = path.read_text()
    path.write_text(text.replace("description: Active users", "description: Edited, active"))
    edited = get()
    assert edited.headers["x-sluice-cache"] == "hit"
    body = orjson.loads(edited.content)
    assert body["description"].startswith("Edited, active")
    assert body["rows"] == orjson.loads(miss.content)["rows"]

    # A new snapshot: seen at once (a stat on the event loop), the cache emptied.
    publish_snapshot(settings.warehouse_path, settings.serving_path, "run-two")
    fresh = get()
    assert fresh.headers["x-sluice-cache"] == "miss"
    assert orjson.loads(fresh.content)["snapshot"]["run_id"] == "run-two"
    assert orjson.loads(get().content)["snapshot"]["run_id"] == "run-two"

    # The file gone: a 404, not the report read before.
    path.unlink()
    gone = http.get("/v1/reports/daily_summary", params=params)
    assert gone.status_code == 404 and gone.json()["limit"] == "report"
