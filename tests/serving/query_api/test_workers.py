"""The warm worker processes that run ad-hoc SQL: one waits between queries with the snapshot
open, reads a newly published snapshot at its next query, and a worker that overstays the
timeout or runs out of memory is stopped and replaced without the caller noticing more than
the refusal. Real child processes and real DuckDB files in a temporary folder."""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
from starlette.testclient import TestClient

from common.keys import KeyStore
from common.settings import load_settings
from serving.query_runner import QueryLimits
from serving.snapshot import publish_snapshot
from serving.sql_guard import QueryRefused
from serving.workers import QueryWorkers
from sluice.server import create_app
from tests.serving.query_api.conftest import FIRST, IGNORES_INTERRUPT, build_warehouse, publish

COUNT = "select count(*) from marts.dau"


@pytest.fixture
def snapshot(tmp_path: Path) -> tuple[Path, Path]:
    warehouse, snapshot = tmp_path / "warehouse.duckdb", tmp_path / "snapshot.duckdb"
    build_warehouse(warehouse)
    publish_snapshot(warehouse, snapshot, "run-one")
    return warehouse, snapshot


@pytest.fixture
def workers(snapshot: tuple[Path, Path]) -> Iterator[QueryWorkers]:
    # A worker's start counts against the timeout: a busy machine gets time enough.
    pool = QueryWorkers(snapshot[1], QueryLimits(timeout_seconds=30), keep=2)
    yield pool
    pool.close()


@pytest.fixture
def impatient_workers(snapshot: tuple[Path, Path]) -> Iterator[QueryWorkers]:
    """Workers with a timeout that IGNORES_INTERRUPT overstays."""
    pool = QueryWorkers(snapshot[1], QueryLimits(timeout_seconds=3), keep=2)
    yield pool
    pool.close()


def waiting_pids(workers: QueryWorkers) -> list[int]:
    return [worker.process.pid for worker in workers._waiting]


def test_one_worker_answers_query_after_query_and_reads_each_new_snapshot(
    workers: QueryWorkers, snapshot: tuple[Path, Path]
) -> None:
    first = workers.run(COUNT)
    assert first.rows == [(60,)] and first.run_id == "run-one"
    [pid] = waiting_pids(workers)
    assert workers.run("select $n * 2 as twice", {"n": 21}).rows == [(42,)]
    assert waiting_pids(workers) == [pid]

    warehouse, path = snapshot
    publish_snapshot(warehouse, path, "run-two")
    assert workers.run(COUNT).run_id == "run-two"
    assert waiting_pids(workers) == [pid]


def test_a_worker_that_ignores_the_interrupt_is_killed_and_replaced(
    impatient_workers: QueryWorkers,
) -> None:
    workers = impatient_workers
    workers.run(COUNT)
    [worker] = workers._waiting
    with pytest.raises(QueryRefused) as refused:
        workers.run(IGNORES_INTERRUPT)
    assert refused.value.limit == "timeout" and "killed" in refused.value.message
    assert not worker.process.is_alive()
    assert workers.run(COUNT).rows == [(60,)]
    assert waiting_pids(workers) != [worker.process.pid]


def test_a_query_out_of_memory_stops_its_worker(workers: QueryWorkers) -> None:
    workers.run(COUNT)
    [worker] = workers._waiting
    with pytest.raises(QueryRefused) as refused:
        workers.run("select repeat('x', 10000000) from range(100)")
    assert refused.value.limit == "memory"
    assert not worker.process.is_alive()
    assert workers.run(COUNT).rows == [(60,)]


def test_a_worker_killed_while_waiting_is_replaced(workers: QueryWorkers) -> None:
    workers.run(COUNT)
    [worker] = workers._waiting
    worker.process.kill()
    worker.process.join(5)
    assert workers.run(COUNT).rows == [(60,)]


def test_queries_at_once_get_workers_of_their_own_and_at_most_keep_wait(
    workers: QueryWorkers,
) -> None:
    sql = "select count(*) from range(20000000) where hash(range) % 7 >= 0"
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda _: workers.run(sql), range(6)))
    assert all(result.rows == [(20_000_000,)] for result in results)
    assert 1 <= len(waiting_pids(workers)) <= 2


def test_the_app_stops_its_query_workers_when_it_shuts_down(tmp_path: Path) -> None:
    settings = load_settings(
        {"SLUICE_DATA_DIR": str(tmp_path / "data"), "SLUICE_START_DATE": FIRST.isoformat()}
    )
    build_warehouse(settings.warehouse_path)
    publish(settings, "run-one")
    key = KeyStore(settings.api_keys_path).create("reader", kind="read")
    before = {child.pid for child in psutil.Process().children(recursive=True)}
    with TestClient(create_app(settings)) as client:
        answer = client.post(
            "/v1/query", json={"sql": COUNT}, headers={"Authorization": f"Bearer {key}"}
        )
        assert answer.status_code == 200, answer.text
        started = [
            child
            for child in psutil.Process().children(recursive=True)
            if child.pid not in before and _forked_by_the_fork_server(child)
        ]
        assert started, "the query ran in no worker process"
    # Shutting the app down stops the workers it started (the process need not exit).
    _, alive = psutil.wait_procs(started, timeout=10)
    assert [p for p in alive if p.status() != psutil.STATUS_ZOMBIE] == []


def _forked_by_the_fork_server(process: psutil.Process) -> bool:
    """Query workers; not multiprocessing's fork server and resource tracker themselves, which
    are this process's own children and outlive any one pool, by design."""
    return process.ppid() != os.getpid()
