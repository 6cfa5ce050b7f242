"""The result cache's lifetimes, with an injected clock: a served range that includes today
expires after 10 minutes, a closed range after 24 hours. Over real HTTP (uvicorn in a thread
on 127.0.0.1), since the clock cannot be injected into a ``sluice serve`` process."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import httpx
import pytest

from common.keys import KeyStore
from common.settings import Settings
from serving.cache import CLOSED_RANGE_TTL, OPEN_RANGE_TTL, ResultCache, ttl_for
from serving.query_api import QueryApi
from tests.serving.query_api.conftest import FIRST, TODAY, Clock, serve_in_thread


def test_ttl_is_short_while_the_range_is_open() -> None:
    assert ttl_for(TODAY, TODAY) == OPEN_RANGE_TTL == 600
    assert ttl_for(None, TODAY) == OPEN_RANGE_TTL
    assert ttl_for(TODAY - dt.timedelta(days=1), TODAY) == CLOSED_RANGE_TTL == 86_400


def test_entries_expire_and_a_new_version_empties_the_cache() -> None:
    clock = Clock()
    cache = ResultCache(clock=clock)
    cache.put("v1", "q", [1], ttl=600)
    assert cache.get("v1", "q") == [1]
    clock.now += 599
    assert cache.get("v1", "q") == [1]
    clock.now += 2
    assert cache.get("v1", "q") is None
    cache.put("v1", "q", [1], ttl=600)
    assert cache.get("v2", "q") is None
    assert cache.get("v1", "q") is None  # the old version is gone for good
    assert (cache.hits, cache.misses) == (2, 3)


@pytest.fixture
def in_process(snapshot_settings: Settings) -> Iterator[tuple[str, Clock, str]]:
    # Noon of the day the data ends, so that a run crossing midnight still sees it as today.
    clock = Clock(dt.datetime.combine(TODAY, dt.time(12), dt.UTC).timestamp())
    key = KeyStore(snapshot_settings.api_keys_path).create("clocked", kind="read")
    api = QueryApi(snapshot_settings, KeyStore(snapshot_settings.api_keys_path), clock=clock)
    try:
        with serve_in_thread(api) as url:
            yield url, clock, key
    finally:
        KeyStore(snapshot_settings.api_keys_path).revoke("clocked")


def test_report_results_expire_after_their_ttl(in_process: tuple[str, Clock, str]) -> None:
    url, clock, key = in_process
    open_range = {"start": str(TODAY - dt.timedelta(days=6)), "end": str(TODAY)}
    closed = {"start": str(FIRST), "end": str(TODAY - dt.timedelta(days=1))}
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as http:

        def cache(params: dict[str, str]) -> str:
            answer = http.get("/v1/reports/daily_summary", params=params)
            assert answer.status_code == 200, answer.text
            return answer.headers["x-sluice-cache"]

        assert [cache(open_range), cache(closed)] == ["miss", "miss"]
        clock.now += 9 * 60
        assert [cache(open_range), cache(closed)] == ["hit", "hit"]
        clock.now += 2 * 60
        assert [cache(open_range), cache(closed)] == ["miss", "hit"]
        clock.now += 24 * 3600
        assert cache(closed) == "miss"
