"""The query API and dashboard of ``sluice serve``: saved reports and ad-hoc SQL over the
serving snapshot, for read keys only.

- ``GET /v1/reports``: the saved reports (``reports/*.yml``).
- ``GET /v1/reports/{name}?start=&end=&format=json|csv&approx=``: one report's rows.
- ``POST /v1/query`` with ``{"sql": "select ...", "approx": false}``: one SELECT, run within
  the limits of ``serving.sql_guard`` and ``serving.query_runner`` and the key's quotas
  (``serving.quotas``); ``"sample": 0.1`` (with ``"sample_method"`` and ``"scale"``) reads a
  sample of each table (``serving.sampling``). Each answer carries the key's rows scanned
  today against its budget, whose overrun raises an alert (``serving.budgets``).
- ``GET /dashboard``: a page that draws the reports (``serving/dashboard.html``).

Everything reads the serving snapshot, never the warehouse, through a cache
(``serving.cache``) that a new snapshot empties; a cached report's JSON is encoded once and
kept beside it. The snapshot's version is checked with one ``stat`` of its file on the event
loop (its row is read again, off the loop, only when the file changed), and a report's file
is parsed again only when its ``stat`` changes, so a cache hit makes no thread hop. A saved
report's reviewed SQL runs in this process on one locked connection kept open
(``SharedSnapshot``, which keeps each report's scan estimate per snapshot); ad-hoc SQL runs in
a warm child process with capped memory (``QueryWorkers``). A read key comes as
``Authorization: Bearer <key>`` (or as HTTP Basic user name); a write key is refused here,
and the ingest routes refuse read keys. Refusals are JSON ``{"error": ..., "limit": ...}``,
and never name a folder of the server: a client learns nothing of its disk (a report file is
``reports/<name>.yml``, the data directory ``$SLUICE_DATA_DIR``).
Each report and query request is one JSON line in the access log (``sluice.api.access``): the
key's name, the report or a hash of the SQL (never the SQL, which may hold literals), the
status, the limit hit, rows, cache and time. Reads no environment: settings come in through
``QueryApi``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Hashable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from common.http import KeyLookup, KeyRefused, MalformedBody, log_access, parse_json, read_key
from common.metrics import LATENCY_BUCKETS
from common.settings import REPO_DIR, REPORTS_DIR, Settings
from serving.budgets import QueryBudgets
from serving.cache import ResultCache, ttl_for
from serving.query_runner import (
    QueryLimits,
    QueryResult,
    SharedSnapshot,
    file_stamp,
    locked_snapshot,
)
from serving.quotas import KeyQuotas
from serving.reports import (
    REPORT_PARAMETER,
    Report,
    ReportError,
    ReportResult,
    load_report,
    render_csv,
    report_names,
)
from serving.reports import list_reports as load_reports
from serving.sampling import Sample, parse_sample, parse_scale, scale_factor, scale_rows
from serving.snapshot import META_SCHEMA, VERSION_TABLE, SnapshotMissing, SnapshotVersion
from serving.sql_guard import QueryRefused, approximate_distinct
from serving.workers import QueryWorkers

DASHBOARD_PAGE = Path(__file__).with_name("dashboard.html")
# A report range longer than this uses approx_count_distinct when the caller asks (approx=true).
APPROX_MIN_DAYS = 31
DEFAULT_RANGE_DAYS = 28
MAX_RANGE_DAYS = 3660
MAX_SQL_BYTES = 64 * 1024
# Queries running at once: the server also takes events, on two cores.
CONCURRENT_QUERIES = 2
QUERY_BUCKETS = (*LATENCY_BUCKETS, 5.0, 10.0)


SNAPSHOT_MISSING = (
    "no serving snapshot has been published yet; it is published after each build "
    "(`sluice materialize --start D1 --end D2`)"
)


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    return str(value)


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    try:
        content = orjson.dumps(body, default=_default)
    except TypeError:  # integers beyond 64 bits (hugeint sums)
        content = json.dumps(body, default=_default).encode()
    return Response(content, status, headers, media_type="application/json")


def _day(request: Request, name: str, default: dt.date) -> dt.date:
    raw = request.query_params.get(name)
    if not raw:
        return default
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise QueryRefused(
            "parameters", 400, f"{name}={raw!r} is not a date; use YYYY-MM-DD"
        ) from None


def _flag(request: Request, name: str) -> bool:
    return request.query_params.get(name, "").lower() in ("1", "true", "yes")


@dataclasses.dataclass(frozen=True)
class SnapshotInfo:
    stamp: Hashable
    run_id: str
    built_at: dt.datetime


class QueryMetrics:
    """The query API's metrics, registered in ``registry``; the cache's figures and the
    snapshot's age (``snapshot_age``) are read when /metrics is asked."""

    def __init__(
        self, registry: CollectorRegistry, cache: ResultCache, snapshot_age: Callable[[], float]
    ) -> None:
        self.latency = Histogram(
            "sluice_query_duration_seconds",
            "Time to answer a report or query request (cache hits included).",
            buckets=QUERY_BUCKETS,
            registry=registry,
        )
        self.refusals = Counter(
            "sluice_query_refusals",
            "Requests refused, by the limit they hit.",
            ["limit"],
            registry=registry,
        )
        registry.register(_CacheLookups(cache))
        Gauge(
            "sluice_query_cache_hit_ratio",
            "Hits / lookups since the server started.",
            registry=registry,
        ).set_function(lambda: _hit_ratio(cache))
        Gauge(
            "sluice_serving_snapshot_age_seconds",
            "Seconds since the snapshot was built.",
            registry=registry,
        ).set_function(snapshot_age)


def _hit_ratio(cache: ResultCache) -> float:
    lookups = cache.hits + cache.misses
    return cache.hits / lookups if lookups else 0.0


class _CacheLookups(Collector):
    """The cache's own counts of hits and misses, as one counter."""

    def __init__(self, cache: ResultCache) -> None:
        self.cache = cache

    def _family(self) -> CounterMetricFamily:
        return CounterMetricFamily(
            "sluice_query_cache_requests",
            "Report and query lookups in the cache.",
            labels=["result"],
        )

    def describe(self) -> Iterator[CounterMetricFamily]:
        yield self._family()

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = self._family()
        family.add_metric(["hit"], self.cache.hits)
        family.add_metric(["miss"], self.cache.misses)
        yield family


class QueryApi:
    """The read side of ``sluice serve``: routes, the cache, quotas and their metrics (in
    ``registry``, the server's; a registry of its own when none is given)."""

    def __init__(
        self,
        settings: Settings,
        keys: KeyLookup,
        clock: Callable[[], float] = time.time,
        reports_dir: Path = REPORTS_DIR,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.keys = keys
        self.clock = clock
        self.reports_dir = reports_dir
        self.limits = QueryLimits(
            max_rows=settings.query_max_rows,
            timeout_seconds=settings.query_timeout_seconds,
            max_scan_rows=settings.query_max_scan_rows,
        )
        self.quotas = KeyQuotas(
            settings.query_per_minute,
            settings.query_scan_rows_per_day,
            settings.query_quotas_path,
            clock=clock,
        )
        self.budgets = QueryBudgets(settings, clock)
        self.cache = ResultCache(clock=clock)
        # Saved reports are reviewed SQL: they run here, on one connection kept open.
        self.reports_snapshot = SharedSnapshot(
            settings.serving_path, self.limits, keep_estimates=True
        )
        # Ad-hoc SQL is anyone's: it runs in child processes that may be killed.
        self.workers = QueryWorkers(settings.serving_path, self.limits, keep=CONCURRENT_QUERIES)
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = QueryMetrics(self.registry, self.cache, self.snapshot_age)
        # Longest first, so the reports folder inside the repository keeps its own name.
        folders = {
            reports_dir: "reports",
            settings.data_dir: "$SLUICE_DATA_DIR",
            REPO_DIR: "<sluice>",
        }
        self._folders = sorted(
            {
                (str(path), label)
                for folder, label in folders.items()
                for path in (folder, folder.resolve())
            },
            key=lambda pair: -len(pair[0]),
        )
        self._snapshot: SnapshotInfo | None = None
        # Built once: a Path built per request costs more than the stat it is for.
        self._snapshot_path = settings.serving_path
        self._report_paths: dict[str, str] = {}
        # Report name -> (its file's stat, the report read from it).
        self._reports: dict[str, tuple[Hashable, Report]] = {}
        self._slots = asyncio.Semaphore(CONCURRENT_QUERIES)

    def routes(self) -> list[Route]:
        """Mount these before the ingest API's ``POST /v1/{kind}``."""
        return [
            Route("/v1/reports", self.list_reports, methods=["GET"]),
            Route("/v1/reports/{name}", self.report, methods=["GET"]),
            Route("/v1/query", self.query, methods=["POST"]),
            Route("/dashboard", self.dashboard, methods=["GET"]),
        ]

    # -- helpers ---------------------------------------------------------------------------

    def _public(self, message: str) -> str:
        """The message with the server's folders named, not shown (a last guard: the
        messages written here name none)."""
        for path, label in self._folders:
            message = message.replace(path, label)
        return message

    def _refused(self, error: QueryRefused) -> Response:
        return _json({"error": self._public(error.message), "limit": error.limit}, error.status)

    def _find_report(self, name: str) -> Report:
        """The saved report ``name``: a 404 naming the others if there is none, a 500 naming
        ``reports/<name>.yml`` and the field if its file is broken. Read again only when the
        file's stat changed since it was last read."""
        kept = self._reports.get(name)
        if kept is not None:
            try:
                stat = os.stat(self._report_paths[name])
            except OSError:
                stat = None
            if stat is not None and kept[0] == (stat.st_ino, stat.st_mtime_ns, stat.st_size):
                return kept[1]
        self._reports.pop(name, None)
        names = report_names(self.reports_dir)
        if name not in names:
            known = ", ".join(names) or "none"
            raise QueryRefused("report", 404, f"no report {name!r}; the reports are: {known}")
        path = self.reports_dir / f"{name}.yml"
        try:
            stat = path.stat()
            report = load_report(path)
        except ReportError as error:
            raise QueryRefused("report", 500, str(error)) from None
        except FileNotFoundError:
            raise QueryRefused("report", 404, f"no report {name!r}") from None
        # The stat taken before reading: a file replaced meanwhile is read again next time.
        self._reports[name] = ((stat.st_ino, stat.st_mtime_ns, stat.st_size), report)
        self._report_paths[name] = str(path)
        return report

    def _today(self) -> dt.date:
        return dt.datetime.fromtimestamp(self.clock(), dt.UTC).date()

    def _reader(self, request: Request) -> str:
        try:
            return read_key(self.keys, request.headers.get("authorization", ""))
        except KeyRefused as error:
            raise QueryRefused("read_key", error.status, error.message) from None

    def _known_snapshot(self) -> SnapshotInfo | None:
        """The snapshot's version when its file is still the one last read (one ``stat``,
        cheap enough for the event loop), else None."""
        known = self._snapshot
        if known is None:
            return None
        try:
            stamp = file_stamp(self._snapshot_path)
        except SnapshotMissing:
            raise QueryRefused("snapshot", 503, SNAPSHOT_MISSING) from None
        return known if known.stamp == stamp else None

    def snapshot_info(self) -> SnapshotInfo:
        """The published snapshot's version, read again only when the file was replaced."""
        path = self.settings.serving_path
        try:
            stamp = file_stamp(path)
        except SnapshotMissing:
            raise QueryRefused("snapshot", 503, SNAPSHOT_MISSING) from None
        if self._snapshot is None or self._snapshot.stamp != stamp:
            with locked_snapshot(path, self.limits) as con:
                row = con.execute(
                    f"select run_id, built_at from {META_SCHEMA}.{VERSION_TABLE}"
                ).fetchone()
            run_id, built_at = (str(row[0]), row[1]) if row else ("", dt.datetime.min)
            self._snapshot = SnapshotInfo(stamp, run_id, built_at)
        return self._snapshot

    async def _run(
        self,
        reader: str,
        cache_key: Hashable,
        ttl: int,
        sql: str,
        parameters: dict[str, Any],
        approx: bool,
        saved: bool,
        sample: Sample | None = None,
    ) -> tuple[QueryResult, SnapshotInfo, bool, dict[str, Any] | None]:
        """A result from the cache, else from the snapshot (counted against the quotas and
        the budget, whose standing comes last; None for a cache hit, which costs nothing):
        a saved report's reviewed SQL in this process, anything else in a worker process."""
        self.quotas.admit(reader)
        info = self._known_snapshot()
        if info is None:
            info = await asyncio.to_thread(self.snapshot_info)
        cached = self.cache.get(info.stamp, cache_key)
        if cached is not None:
            return cached, info, True, None
        async with self._slots:
            try:
                if saved:
                    result = await asyncio.to_thread(
                        self.reports_snapshot.run, sql, parameters, approx
                    )
                else:
                    result = await asyncio.to_thread(
                        self.workers.run, sql, parameters, approx, sample
                    )
            except SnapshotMissing:
                raise QueryRefused("snapshot", 503, SNAPSHOT_MISSING) from None
        used = self.quotas.charge(reader, result.scanned_rows)
        budget = self.budgets.status(reader, used - result.scanned_rows, used)
        # Only what came from the version the key names is kept under it.
        if result.run_id == info.run_id:
            self.cache.put(info.stamp, cache_key, result, ttl)
        return result, info, False, budget

    def _observe(
        self, started: float, request: Request, response: Response, fields: dict[str, Any]
    ) -> Response:
        elapsed = time.perf_counter() - started
        self.metrics.latency.observe(elapsed)
        log_access(request.method, request.url.path, response.status_code, elapsed, fields)
        return response

    def close(self) -> None:
        """Close the reports' connection to the snapshot, the query workers and the quota
        file (the process exiting does it too)."""
        self.reports_snapshot.close()
        self.workers.close()
        self.budgets.close()
        self.quotas.close()

    # -- routes ----------------------------------------------------------------------------

    async def list_reports(self, request: Request) -> Response:
        try:
            self.quotas.admit(self._reader(request))
            reports = load_reports(self.reports_dir)
        except QueryRefused as error:
            self.metrics.refusals.labels(error.limit).inc()
            return self._refused(error)
        except ReportError as error:
            return self._refused(QueryRefused("report", 500, str(error)))
        return _json(
            {
                "reports": [
                    {
                        "name": report.name,
                        "description": report.description,
                        "chart": None
                        if report.chart is None
                        else {"type": report.chart.kind, "x": report.chart.x, "y": report.chart.y},
                        "rates": list(report.rates),
                        "schedule": report.schedule,
                        "window_days": report.window_days,
                    }
                    for report in reports
                ]
            }
        )

    async def report(self, request: Request) -> Response:
        started = time.perf_counter()
        fields: dict[str, Any] = {}
        try:
            reader = fields["reader"] = self._reader(request)
            saved = self._find_report(request.path_params["name"])
            today = self._today()
            end = _day(request, "end", today)
            start = _day(request, "start", end - dt.timedelta(days=DEFAULT_RANGE_DAYS - 1))
            days = (end - start).days + 1
            if days < 1 or days > MAX_RANGE_DAYS:
                raise QueryRefused(
                    "parameters", 400, f"start..end must cover 1 to {MAX_RANGE_DAYS} days"
                )
            fmt = request.query_params.get("format", "json")
            if fmt not in ("json", "csv"):
                raise QueryRefused("parameters", 400, f"format={fmt!r}; use json or csv")
            approx = _flag(request, "approx") and days > APPROX_MIN_DAYS
            sql = REPORT_PARAMETER.sub(r"$\1", saved.sql)
            if approx:
                sql = approximate_distinct(sql)
            key = ("report", saved.name, saved.sql, start, end, approx)
            fields |= {"report": saved.name, "start": start, "end": end}
            result, info, cached, _budget = await self._run(
                reader,
                key,
                ttl_for(end, today),
                sql,
                {"start": start, "end": end},
                approx=False,
                saved=True,
            )
        except QueryRefused as error:
            self.metrics.refusals.labels(error.limit).inc()
            return self._observe(
                started, request, self._refused(error), fields | {"limit": error.limit}
            )
        fields |= {"rows": len(result.rows), "cached": cached}
        headers = {"X-Sluice-Cache": "hit" if cached else "miss"}
        encoded_as = ("json", saved.description)
        if fmt == "json" and cached:
            content = self.cache.extra(info.stamp, key, encoded_as)
            if content is not None:
                response = Response(content, 200, headers, media_type="application/json")
                return self._observe(started, request, response, fields)
        if fmt == "csv":
            text = render_csv(self._report_result(saved, start, end, result, info))
            response = Response(text, 200, headers, media_type="text/csv; charset=utf-8")
            return self._observe(started, request, response, fields)
        body = {
            "report": saved.name,
            "description": saved.description,
            "start": start,
            "end": end,
            "approx": approx,
            "cached": cached,
            "snapshot": {"run_id": info.run_id, "built_at": info.built_at},
            "columns": result.columns,
            # Tuples: JSON arrays as they are (orjson, and json on its fallback).
            "rows": result.rows,
            "truncated": result.truncated,
        }
        response = _json(body, headers=headers)
        if cached:
            # Every later hit on this entry answers these bytes (the body differs from a
            # miss's only in "cached").
            self.cache.set_extra(info.stamp, key, encoded_as, response.body)
        return self._observe(started, request, response, fields)

    @staticmethod
    def _report_result(
        saved: Report, start: dt.date, end: dt.date, result: QueryResult, info: SnapshotInfo
    ) -> ReportResult:
        version = SnapshotVersion(run_id=info.run_id, built_at=info.built_at, row_counts={})
        return ReportResult(saved, start, end, result.columns, result.rows, version)

    async def query(self, request: Request) -> Response:
        started = time.perf_counter()
        fields: dict[str, Any] = {}
        try:
            reader = fields["reader"] = self._reader(request)
            body = await request.body()
            if len(body) > MAX_SQL_BYTES:
                raise QueryRefused("request_size", 413, "the request is over 64 KB")
            try:
                doc = parse_json(body)
            except MalformedBody:
                raise QueryRefused(
                    "parameters", 400, 'send JSON: {"sql": "select ...", "approx": false}'
                ) from None
            sql = doc.get("sql") if isinstance(doc, dict) else None
            if not isinstance(sql, str) or not sql.strip():
                raise QueryRefused("parameters", 400, '"sql" must be a non-empty string')
            approx = doc.get("approx") is True
            sample = parse_sample(doc.get("sample"), doc.get("sample_method"))
            scale = parse_scale(doc.get("scale"))
            if scale and sample is None:
                raise QueryRefused("parameters", 400, '"scale" needs "sample" (a rate)')
            fields["sql_sha256"] = hashlib.sha256(sql.encode()).hexdigest()[:16]
            key = ("query", sql.strip(), approx, sample)
            result, info, cached, budget = await self._run(
                reader, key, ttl_for(None, self._today()), sql, {}, approx, False, sample
            )
            rows = result.rows
            sampled: dict[str, Any] | None = None
            if sample is not None:
                factor = scale_factor(sample, result.sampled_tables, scale)
                rows = scale_rows(result.columns, rows, scale, factor) if scale else rows
                tables = result.sampled_tables
                methods = sorted({table.method for table in tables})
                sampled = {
                    "rate": sample.rate,
                    "method": sample.method,
                    "seed": sample.seed,
                    "tables": [
                        {"table": table.name, "method": table.method, "rows": table.rows}
                        for table in tables
                    ],
                    "scale_factor": factor if scale else None,
                    "scaled_columns": scale,
                    "note": (
                        f"each table was read through TABLESAMPLE {sample.percent:g}% "
                        f"({' or '.join(methods)}, repeatable); "
                        + (
                            f"the columns {', '.join(scale)} were multiplied by "
                            f"{factor:g} (1 / rate); every other column is as computed on "
                            "the sample"
                            if scale
                            else "no column was scaled: counts and sums are of the sample"
                        )
                    ),
                }
                fields["sample"] = sample.rate
        except QueryRefused as error:
            self.metrics.refusals.labels(error.limit).inc()
            return self._observe(
                started, request, self._refused(error), fields | {"limit": error.limit}
            )
        fields |= {"rows": len(result.rows), "cached": cached}
        answer = {
            "columns": result.columns,
            "rows": [list(row) for row in rows],
            "truncated": result.truncated,
            "max_rows": self.limits.max_rows,
            "approx": approx,
            "sampled": sampled,
            "cached": cached,
            "scanned_rows": 0 if cached else result.scanned_rows,
            "budget": budget,
            "snapshot": {"run_id": info.run_id, "built_at": info.built_at},
        }
        headers = {"X-Sluice-Cache": "hit" if cached else "miss"}
        return self._observe(started, request, _json(answer, headers=headers), fields)

    async def dashboard(self, _request: Request) -> Response:
        # The page holds no data: its script asks for a read key and calls /v1/reports.
        return Response(
            DASHBOARD_PAGE.read_text(encoding="utf-8"),
            media_type="text/html; charset=utf-8",
            headers={
                "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; "
                "style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:",
                "Cache-Control": "no-store",
            },
        )

    # -- metrics ---------------------------------------------------------------------------

    def snapshot_age(self) -> float:
        """Seconds since the published snapshot was built; NaN when there is none."""
        try:
            built_at = self.snapshot_info().built_at.replace(tzinfo=dt.UTC)
            return self.clock() - built_at.timestamp()
        except (QueryRefused, OverflowError, ValueError):
            return math.nan
