"""Per-key quotas survive a restart: they live in the data directory's quota file, so a
query API rebuilt on the same data directory (as after a restart of ``sluice serve``) still
refuses a key that spent its day, until the next UTC day. Served over real HTTP on
127.0.0.1 with an injected clock (a ``sluice serve`` process cannot take one)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import httpx
import pytest

from common.keys import KeyStore
from common.settings import Settings, load_settings
from serving.query_api import QueryApi
from serving.quotas import QuotaStoreError
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
