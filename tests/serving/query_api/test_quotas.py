"""Per-key quotas survive a restart: they live in the data directory's quota file, so a
query API rebuilt on the same data directory (as after a restart of ``sluice serve``) still
refuses a key that spent its day, until the next UTC day; and two query APIs on one file
share each key's limits. Served over real HTTP on 127.0.0.1 with an injected clock (a
``sluice serve`` process cannot take one); the counts' write-behind to the file is driven
by ``KeyQuotas.sync`` where a test needs it done."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import httpx
import pytest

from common.keys import KeyStore
from common.settings import Settings, load_settings
from serving.query_api import QueryApi
from serving.quotas import SCHEMA, KeyQuotas, QuotaStoreError
from serving.sql_guard import QueryRefused
from tests.serving.query_api.conftest import (
    LIMITS,
    Clock,
    build_warehouse,
    publish,
    serve_in_thread,
)

# 3,000,000 rows a day (LIMITS): two of these spend it.
BIG = "select count(*) from range(2000000)"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    settings = load_settings({"SLUICE_DATA_DIR": str(tmp_path / "data"), **LIMITS})
    build_warehouse(settings.warehouse_path)
    publish(settings, "run-one")
    return settings


def ask(url: str, key: str, sql: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"}
    return httpx.post(f"{url}/v1/query", json={"sql": sql}, headers=headers, timeout=30)


def test_a_key_that_spent_its_day_stays_refused_after_a_restart_until_the_next_day(
    settings: Settings,
) -> None:
    keys = KeyStore(settings.api_keys_path)
    spender, other = keys.create("spender", kind="read"), keys.create("other", kind="read")
    # 22:00 UTC, so the next day is two hours away.
    evening = dt.datetime.combine(dt.date(2026, 3, 10), dt.time(22), dt.UTC).timestamp()
    clock = Clock(evening)

    with serve_in_thread(QueryApi(settings, keys, clock=clock)) as url:
        assert ask(url, spender, BIG).status_code == 200
        assert ask(url, spender, BIG + " where true").status_code == 200
        assert ask(url, spender, "select 1").status_code == 429

    with serve_in_thread(QueryApi(settings, keys, clock=clock)) as url:
        refused = ask(url, spender, "select 1")
        assert refused.status_code == 429, refused.text
        assert refused.json()["limit"] == "rows_scanned_per_day"
        assert "4,000,000 rows today" in refused.json()["error"]
        assert ask(url, other, "select 1").status_code == 200  # quotas are per key

        clock.now += 3 * 3600  # 01:00 UTC the next day
        assert ask(url, spender, "select 1").status_code == 200


def test_requests_per_minute_survive_a_restart_too(settings: Settings) -> None:
    keys = KeyStore(settings.api_keys_path)
    key = keys.create("busy", kind="read")
    clock = Clock()
    with serve_in_thread(QueryApi(settings, keys, clock=clock)) as url:
        answers = [ask(url, key, "select 1").status_code for _ in range(40)]
        assert answers == [200] * 40

    with serve_in_thread(QueryApi(settings, keys, clock=clock)) as url:
        refused = ask(url, key, "select 1")
        assert refused.status_code == 429 and refused.json()["limit"] == "queries_per_minute"
        clock.now += 61
        assert ask(url, key, "select 1").status_code == 200


def test_an_unwritable_quota_file_is_named(settings: Settings) -> None:
    settings.query_quotas_path.mkdir(parents=True)  # a folder where the file should be
    with pytest.raises(QuotaStoreError, match=str(settings.query_quotas_path)):
        QueryApi(settings, KeyStore(settings.api_keys_path))


def test_two_servers_on_one_quota_file_share_a_keys_limits(settings: Settings) -> None:
    """As two processes on one data directory: each counts in memory and writes behind to
    the file; after a sync each sees the other's requests and rows."""
    keys = KeyStore(settings.api_keys_path)
    key = keys.create("shared", kind="read")
    clock = Clock()
    first, second = QueryApi(settings, keys, clock=clock), QueryApi(settings, keys, clock=clock)
    with serve_in_thread(first) as one, serve_in_thread(second) as two:
        assert [ask(one, key, "select 1").status_code for _ in range(25)] == [200] * 25
        assert [ask(two, key, "select 1").status_code for _ in range(15)] == [200] * 15
        first.quotas.sync()
        second.quotas.sync()  # writes its 15, reads the first's 25 back
        refused = ask(two, key, "select 1")
        assert refused.status_code == 429 and refused.json()["limit"] == "queries_per_minute"
        first.quotas.sync()  # reads the second's 15 back
        assert ask(one, key, "select 1").status_code == 429

        clock.now += 61
        assert ask(one, key, BIG).status_code == 200
        assert ask(one, key, BIG + " where true").status_code == 200  # 4,000,000 rows
        first.quotas.sync()
        second.quotas.sync()
        spent = ask(two, key, "select 1")
        assert spent.status_code == 429 and spent.json()["limit"] == "rows_scanned_per_day"
        assert "4,000,000 rows today" in spent.json()["error"]


def test_counts_not_yet_written_are_written_on_close(tmp_path: Path) -> None:
    """A request counted in memory reaches the file by close(), where another opening (a
    restart) and the sqlite3 CLI read it."""
    path = tmp_path / "quotas.sqlite"
    now = dt.datetime(2026, 3, 10, 12, tzinfo=dt.UTC).timestamp()
    quotas = KeyQuotas(3, 1000, path, clock=lambda: now)
    for _ in range(3):
        quotas.admit("k")
    assert quotas.charge("k", 400) == 400
    quotas.close()

    with sqlite3.connect(path) as db:
        assert db.execute("select count(*) from requests where reader = 'k'").fetchone() == (3,)
        assert db.execute("select day, rows from rows_scanned").fetchall() == [("2026-03-10", 400)]
    reopened = KeyQuotas(3, 1000, path, clock=lambda: now + 1)
    with pytest.raises(QueryRefused, match="sent 3 queries in the last minute"):
        reopened.admit("k")
    assert reopened.charge("k", 100) == 500
    reopened.close()


def test_a_request_read_back_from_the_file_leaves_the_window_with_its_second(
    tmp_path: Path,
) -> None:
    """The file's requests are read back counted per second: one leaves the window when its
    whole second has, never sooner than 60 s after it was made."""
    path = tmp_path / "quotas.sqlite"
    clock = Clock(1_000_000.3)
    quotas = KeyQuotas(1, 10**9, path, clock=clock)
    quotas.admit("k")
    quotas.sync()  # now among the file's counts, at second 1,000,000
    clock.now = 1_000_060.3  # exactly a minute later: still in the window
    with pytest.raises(QueryRefused, match="queries in the last minute"):
        quotas.admit("k")
    clock.now = 1_000_060.6  # past a minute, but its second is not all past
    with pytest.raises(QueryRefused, match="queries in the last minute"):
        quotas.admit("k")
    clock.now = 1_000_061.0
    quotas.admit("k")
    quotas.close()


def test_a_quota_file_of_an_earlier_version_is_read_as_it_is(tmp_path: Path) -> None:
    """The file's tables are the ones earlier versions wrote: its counts hold on opening."""
    path = tmp_path / "quotas.sqlite"
    now = dt.datetime(2026, 3, 10, 12, tzinfo=dt.UTC).timestamp()
    with sqlite3.connect(path) as db:
        db.executescript(SCHEMA)
        db.executemany("insert into requests values ('k', ?)", [(now - 10,), (now - 5,)])
        db.execute("insert into rows_scanned values ('k', '2026-03-10', 900)")
    db.close()
    quotas = KeyQuotas(3, 1000, path, clock=lambda: now)
    quotas.admit("k")  # the third of the minute
    with pytest.raises(QueryRefused, match="queries in the last minute"):
        quotas.admit("k")
    assert quotas.charge("other", 10) == 10
    assert quotas.charge("k", 50) == 950
    quotas.close()
