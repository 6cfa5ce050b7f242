"""A small serving snapshot and a real ``sluice serve`` on 127.0.0.1 that reads it.

The snapshot is published by ``serving.snapshot.publish_snapshot`` from a warehouse of fake
marts (``tests.serving.fake_marts``: the contracts' columns, made-up numbers): 60 days ending
today, so ranges can be open or closed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette

from common.keys import KeyStore
from common.settings import Settings, load_settings
from serving.query_api import QueryApi
from serving.snapshot import publish_snapshot
from tests.ingestion.api.conftest import Server, free_port
from tests.serving import fake_marts
from tests.serving.fake_marts import FakeMarts

DAYS = 60
TODAY = dt.datetime.now(dt.UTC).date()
FIRST = TODAY - dt.timedelta(days=DAYS - 1)
# One row, one function call: DuckDB checks for the interrupt only between chunks, so a
# query worker running it is killed. About 8 s and 0.5 GB on this machine.
IGNORES_INTERRUPT = (
    r"select length(regexp_replace(repeat('ab', 40000000), '(a)(b)', '\2\1\2\1', 'g'))"
)
# Small enough for the tests to reach, big enough for the dashboard and the reports. A
# worker's start counts against the timeout; 4 s covers it on a busy machine and still stops
# IGNORES_INTERRUPT early.
LIMITS = {
    "SLUICE_QUERY_TIMEOUT_SECONDS": "4",
    "SLUICE_QUERY_MAX_ROWS": "1000",
    "SLUICE_QUERY_MAX_SCAN_ROWS": "30000000",
    "SLUICE_QUERY_PER_MINUTE": "40",
    "SLUICE_QUERY_SCAN_ROWS_PER_DAY": "3000000",
}

MARTS = FakeMarts(days=DAYS, last=TODAY)


def build_warehouse(path: Path) -> None:
    fake_marts.build_warehouse(path, MARTS)


def publish(settings: Settings, run_id: str) -> None:
    publish_snapshot(settings.warehouse_path, settings.serving_path, run_id)


@pytest.fixture(scope="package")
def snapshot_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    data_dir = tmp_path_factory.mktemp("query-api") / "data"
    env = {"SLUICE_DATA_DIR": str(data_dir), "SLUICE_START_DATE": FIRST.isoformat(), **LIMITS}
    settings = load_settings(env)
    build_warehouse(settings.warehouse_path)
    publish(settings, "run-one")
    return settings


@pytest.fixture(scope="package")
def query_server(
    snapshot_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    settings = snapshot_settings
    env = {**os.environ, **settings.subprocess_env(), **LIMITS}
    log = tmp_path_factory.mktemp("query-api-log") / "serve.log"
    server = Server(settings, free_port(), env, log)
    server.start()
    yield server
    server.stop(signal.SIGKILL)


class Keys:
    """Makes keys in the server's key file; every name is new."""

    def __init__(self, settings: Settings) -> None:
        self.store = KeyStore(settings.api_keys_path)
        self.count = 0

    def read(self) -> str:
        self.count += 1
        return self.store.create(f"reader-{self.count}", kind="read")

    def write(self) -> str:
        self.count += 1
        return self.store.create(f"writer-{self.count}")


@pytest.fixture(scope="package")
def keys(snapshot_settings: Settings) -> Keys:
    return Keys(snapshot_settings)


@pytest.fixture
def client(query_server: Server, keys: Keys) -> Iterator[httpx.Client]:
    """An HTTP client with a fresh read key of its own (so quotas never carry over)."""
    headers = {"Authorization": f"Bearer {keys.read()}"}
    with httpx.Client(base_url=query_server.url, headers=headers, timeout=30) as http:
        yield http


class Clock:
    """A clock the test moves by hand, for a QueryApi served in the test's process."""

    def __init__(self, now: float | None = None) -> None:
        self.now = time.time() if now is None else now

    def __call__(self) -> float:
        return self.now


@contextlib.contextmanager
def serve_in_thread(api: QueryApi) -> Iterator[str]:
    """The query API's routes on uvicorn in a thread on 127.0.0.1; yields the base URL. For
    what a ``sluice serve`` process cannot show: an injected clock."""
    port = free_port()
    config = uvicorn.Config(
        Starlette(routes=api.routes()), host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        api.close()
