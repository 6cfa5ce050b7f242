"""Warm child processes that run ad-hoc SQL on the serving snapshot, within the guards.

Each worker is a child of the server (forked from a clean fork server) whose address space
is capped (``QueryLimits.max_process_bytes``): some DuckDB functions (``repeat('x', 1e9)``)
allocate outside DuckDB's memory limit and cannot be interrupted. A worker keeps one locked
connection to the snapshot open between queries (``serving.query_runner.SharedSnapshot``: a
cursor per query, a newly published snapshot opened at the next query), so a query costs a
message to a waiting process instead of a fork and an opening of the snapshot (~100 ms).

- A worker that is still busy a second after the timeout (the query ignored the interrupt)
  is killed; one that dies (out of memory, a crash) is gone; one whose query ran out of
  memory is stopped, so the next query gets a fresh address space; and each is replaced after
  ``MAX_QUERIES_PER_WORKER`` queries. The next query starts a new worker when none waits.
- Queries of different keys may share a worker: a SELECT on the locked, read-only connection
  changes nothing a later query could see (no table, variable or setting; ``query()`` takes
  only a SELECT), and each query has a cursor of its own.

Reads no environment: the snapshot path and limits come from the caller (``Settings``).
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serving.query_runner import QueryLimits, QueryResult, SharedSnapshot
from serving.sampling import Sample
from serving.snapshot import SnapshotMissing
from serving.sql_guard import QueryRefused

# Time a worker gets beyond the timeout to stop on its own interrupt before it is killed.
KILL_GRACE_SECONDS = 1.0
# A worker is replaced after this many queries, so what DuckDB's allocator keeps never adds up.
MAX_QUERIES_PER_WORKER = 500


def _result_bytes(rows: list[tuple[Any, ...]]) -> int:
    return sum(len(str(value)) for row in rows for value in row)


def _answer(
    shared: SharedSnapshot,
    limits: QueryLimits,
    sql: str,
    parameters: Mapping[str, Any],
    approx: bool,
    sample: Sample | None = None,
) -> tuple[Any, ...]:
    try:
        result = shared.run(sql, parameters, approx, sample)
        size = _result_bytes(result.rows)
        if size > limits.max_result_bytes:
            raise QueryRefused(
                "result_size",
                413,
                f"the answer would be about {size:,} bytes; the limit is "
                f"{limits.max_result_bytes:,}: select fewer or shorter values",
            )
        return ("ok", result)
    except QueryRefused as error:
        return ("refused", error.limit, error.status, error.message)
    except SnapshotMissing as error:
        return ("missing", str(error))
    except MemoryError:
        return ("refused", "memory", 413, "the query needs more memory than allowed")


def _serve(connection: Any, snapshot: Path, limits: QueryLimits) -> None:
    """A worker's life: answer one query after another until the server goes away."""
    resource.setrlimit(resource.RLIMIT_AS, (limits.max_process_bytes, limits.max_process_bytes))
    shared = SharedSnapshot(snapshot, limits)
    try:
        while True:
            try:
                sql, parameters, approx, sample = connection.recv()
            except EOFError:
                return  # the server closed its end: it stopped this worker or exited
            answer = _answer(shared, limits, sql, parameters, approx, sample)
            try:
                connection.send(answer)
            except MemoryError:
                connection.send(("refused", "memory", 413, "the answer needs more memory"))
    finally:
        shared.close()
        connection.close()


def _context() -> Any:
    # glibc gives each thread that allocates an arena of its own, each reserving 64 MB of
    # address space, which the worker's RLIMIT_AS counts: a query well within the cap was
    # now and then refused as out of memory. Two arenas are plenty for one query at a time;
    # the fork server reads this when it starts, and its workers inherit it.
    os.environ.setdefault("MALLOC_ARENA_MAX", "2")
    context = multiprocessing.get_context("forkserver")
    # Workers start with DuckDB loaded, so starting one costs a fork, not an import.
    context.set_forkserver_preload(["serving.workers"])
    return context


@dataclass
class _Worker:
    process: Any
    connection: Any
    queries: int = 0

    def stop(self) -> None:
        self.connection.close()
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)


class QueryWorkers:
    """Up to ``keep`` waiting workers; ``run`` hands a query to one (starting one if none
    waits) and takes its answer, or kills it when it overstays."""

    def __init__(self, snapshot: Path, limits: QueryLimits, keep: int = 2) -> None:
        self.snapshot = snapshot
        self.limits = limits
        self.keep = keep
        self._waiting: list[_Worker] = []
        self._lock = threading.Lock()
        self._closed = False

    def _start(self) -> _Worker:
        context = _context()
        ours, theirs = context.Pipe()
        process = context.Process(
            target=_serve, args=(theirs, self.snapshot, self.limits), daemon=True
        )
        process.start()
        theirs.close()
        return _Worker(process, ours)

    def _take(self) -> _Worker:
        with self._lock:
            while self._waiting:
                worker = self._waiting.pop()
                if worker.process.is_alive():
                    return worker
                worker.stop()
        return self._start()

    def _give_back(self, worker: _Worker) -> None:
        with self._lock:
            if (
                not self._closed
                and len(self._waiting) < self.keep
                and worker.queries < MAX_QUERIES_PER_WORKER
            ):
                self._waiting.append(worker)
                return
        worker.stop()

    def _ask(self, request: tuple[Any, ...]) -> tuple[_Worker, tuple[Any, ...] | None]:
        """Send the query to a worker: (the worker, its answer, or None if it died)."""
        worker = self._take()
        try:
            worker.connection.send(request)
        except OSError:
            # It died while waiting (killed from outside): one more try on a new worker.
            worker.stop()
            worker = self._start()
            worker.connection.send(request)
        if not worker.connection.poll(self.limits.timeout_seconds + KILL_GRACE_SECONDS):
            worker.stop()
            raise QueryRefused(
                "timeout",
                408,
                f"the query ran longer than {self.limits.timeout_seconds:g} s "
                "(SLUICE_QUERY_TIMEOUT_SECONDS), ignored the interrupt, and its process was killed",
            )
        try:
            return worker, worker.connection.recv()
        except EOFError:
            return worker, None

    def run(
        self,
        sql: str,
        parameters: Mapping[str, Any] | None = None,
        approx: bool = False,
        sample: Sample | None = None,
    ) -> QueryResult:
        """Check and run one SELECT in a worker (through ``serving.sampling``'s sample, if
        given); raises QueryRefused or SnapshotMissing."""
        worker, outcome = self._ask((sql, dict(parameters or {}), approx, sample))
        worker.queries += 1
        if outcome is None or outcome[:2] == ("refused", "memory"):
            worker.stop()
        else:
            self._give_back(worker)
        if outcome is None:
            raise QueryRefused(
                "memory",
                413,
                "the query's process ended without an answer (out of memory or a crash); "
                "ask for less at once",
            )
        if outcome[0] == "ok":
            result: QueryResult = outcome[1]
            return result
        if outcome[0] == "missing":
            raise SnapshotMissing(outcome[1])
        _, limit, status, message = outcome
        raise QueryRefused(limit, status, message)

    def close(self) -> None:
        """Stop the waiting workers; busy ones stop when their query is done."""
        with self._lock:
            self._closed = True
            waiting, self._waiting = self._waiting, []
        for worker in waiting:
            worker.stop()
