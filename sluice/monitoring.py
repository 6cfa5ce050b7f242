"""What an operator watches, on ``/metrics`` and ``GET /v1/monitoring`` of ``sluice serve``.

Dagster exports no metrics of its own, so Sluice reads them from the data directory's Dagster
instance (its run and event log storage, SQLite or PostgreSQL) when ``/metrics`` is scraped:

- ``sluice_etl_last_run_success{job}``, ``..._duration_seconds{job}``,
  ``..._end_timestamp_seconds{job}``: the last finished run of each job (from the latest
  ``RECENT_RUNS`` runs), and ``sluice_etl_runs{status}``, every run the instance holds.
- ``sluice_asset_last_materialization_timestamp_seconds{asset}``, ``sluice_asset_age_seconds``
  and ``sluice_asset_freshness_state{asset,state}`` (PASS, WARN, FAIL, UNKNOWN, one of them 1)
  for the assets with a freshness policy (``raw/events``, ``marts/*``; orchestration/lib.py).
- ``sluice_load_rows{result}``: what the last load wrote to ``raw.events`` and quarantined;
  ``sluice_landing_waiting_files`` and ``..._oldest_waiting_seconds``: what waits for the
  next load, and since when (the load's dlt state, as the landing sensor reads it).
- ``sluice_storage_bytes{area}``: the sizes of the data directory's files (warehouse, serving
  snapshot and Parquet, landing, real-time store, Dagster home; on Spark the warehouse is the
  tables' folders, and the lake an area of its own), from ``stat`` only: the warehouse has
  one writer, so it is never opened here.

Both reads are cached for ``CACHE_SECONDS``, so a scrape every few seconds costs one instance
read. ``sluice_dashboard_load_seconds`` is the dashboard's own load time, which its page
posts once per load (``POST /v1/monitoring/dashboard-load``, a read key, ``{"seconds": x}``
from ``performance.now()`` when the first reports are drawn: what the viewer waited).

``GET /v1/monitoring`` (read keys) answers the same figures as JSON for the dashboard's
monitoring panel, computed from one collection of the server's registry, so the panel and
``/metrics`` never disagree; quantiles come from the histograms' buckets as Prometheus'
``histogram_quantile`` computes them (since the server started), and the ingest rate from
the accepted-messages counter between two looks (``RATE_SECONDS`` apart at least).
Reads no environment: settings come in through ``MonitoringApi``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import datetime as dt
import logging
import math
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from common.disk import disk_bytes
from common.http import KeyLookup, KeyRefused, MalformedBody, parse_json, read_key
from common.settings import Settings

CACHE_SECONDS = 10.0
# Runs looked at for each job's last finished run.
RECENT_RUNS = 200
FRESHNESS_STATES = ("PASS", "WARN", "FAIL", "UNKNOWN")
DASHBOARD_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0)
MAX_DASHBOARD_SECONDS = 600.0
# The ingest rate is taken over at least this many seconds (from the server's start at first).
RATE_SECONDS = 60.0
INGEST_PATH_PREFIX = "/v1/"
FINISHED = ("SUCCESS", "FAILURE", "CANCELED")

log = logging.getLogger("sluice.api")


@dataclasses.dataclass(frozen=True)
class RunFigures:
    job: str
    run_id: str
    status: str
    started_at: float | None
    ended_at: float | None

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return self.ended_at - self.started_at


@dataclasses.dataclass(frozen=True)
class AssetFigures:
    asset: str
    last_materialized_at: float | None
    freshness: str


@dataclasses.dataclass(frozen=True)
class InstanceFigures:
    """What the Dagster instance says: each job's last finished run, runs by status, the
    freshness of the assets that have a policy, and the last load's rows."""

    last_runs: list[RunFigures]
    runs_by_status: dict[str, int]
    assets: list[AssetFigures]
    load_rows: dict[str, int]

    @property
    def last_run(self) -> RunFigures | None:
        ended = [run for run in self.last_runs if run.ended_at is not None]
        return max(ended, key=lambda run: run.ended_at or 0.0) if ended else None


NO_INSTANCE = InstanceFigures([], {}, [], {})


def _freshness_policy(key: Any) -> Any:
    """The policy orchestration gives the asset: raw/events' time window, the marts' daily
    deadline; None for the others."""
    from orchestration.ingest.assets import RAW_EVENTS_KEY
    from orchestration.lib import MARTS_FRESHNESS, RAW_FRESHNESS

    if key == RAW_EVENTS_KEY:
        return RAW_FRESHNESS
    if key.path[0] == "marts":
        return MARTS_FRESHNESS
    return None


def read_instance(settings: Settings, now: float) -> InstanceFigures:
    """Read the data directory's Dagster instance (never the warehouse); nothing before the
    first command prepared it."""
    if not (settings.dagster_home / "dagster.yaml").exists():
        return NO_INSTANCE
    import dagster as dg  # sluice serve imports Dagster only when asked

    from orchestration.ingest.assets import RAW_EVENTS_KEY
    from sluice.status import freshness_state

    moment = dt.datetime.fromtimestamp(now, dt.UTC)
    with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        last: dict[str, RunFigures] = {}
        for run_record in instance.get_run_records(limit=RECENT_RUNS):
            run = run_record.dagster_run
            if run.status.value in FINISHED and run.job_name not in last:
                last[run.job_name] = RunFigures(
                    run.job_name,
                    run.run_id,
                    run.status.value,
                    run_record.start_time,
                    run_record.end_time,
                )
        by_status = {
            status.value: instance.get_runs_count(filters=dg.RunsFilter(statuses=[status]))
            for status in dg.DagsterRunStatus
        }
        assets = []
        for record in instance.get_asset_records():
            key = record.asset_entry.asset_key
            policy = _freshness_policy(key)
            if policy is None:
                continue
            latest = record.asset_entry.last_materialization_record
            when = latest.timestamp if latest is not None else None
            assets.append(
                AssetFigures(key.to_user_string(), when, freshness_state(policy, when, moment))
            )
        load_rows: dict[str, int] = {}
        event = instance.get_latest_materialization_event(RAW_EVENTS_KEY)
        if event is not None and event.asset_materialization is not None:
            metadata = event.asset_materialization.metadata
            for result, name in (("loaded", "loaded_rows"), ("rejected", "rejected_rows")):
                if name in metadata:
                    load_rows[result] = int(getattr(metadata[name], "value", 0))
    return InstanceFigures(
        sorted(last.values(), key=lambda run: run.job),
        {status: count for status, count in by_status.items() if count},
        sorted(assets, key=lambda asset: asset.asset),
        load_rows,
    )


def storage_areas(settings: Settings) -> dict[str, list[Path]]:
    """The data directory's areas: a DuckDB or SQLite file counts with its write-ahead log. On
    the Spark engine the warehouse is the folders of Spark's tables, and the lake (raw's
    Parquet) is an area of its own."""

    def with_wal(path: Path) -> list[Path]:
        return [path, path.with_name(path.name + ".wal"), path.with_name(path.name + "-wal")]

    if settings.warehouse_engine == "spark":
        warehouse = {"warehouse": [settings.spark_warehouse_dir], "lake": [settings.lake_dir]}
    else:
        warehouse = {"warehouse": with_wal(settings.warehouse_path)}
    return {
        **warehouse,
        "serving_snapshot": with_wal(settings.serving_path),
        "serving_parquet": [settings.serving_parquet_dir],
        "landing": [settings.landing_dir],
        "realtime": [settings.realtime_store_path.parent],
        "dagster": [settings.dagster_home],
    }


@dataclasses.dataclass(frozen=True)
class LandingBacklog:
    files: int
    # Since the oldest of them was closed (its modification time); 0 without any.
    oldest_seconds: float


def landing_backlog(settings: Settings, now: float) -> LandingBacklog:
    """The closed landing files no load has taken yet, by the load's dlt state (as the
    landing sensor asks), never the warehouse."""
    from ingestion.landing.helpers import new_landing_files
    from ingestion.pipeline import pipeline_name

    waiting = new_landing_files(settings.landing_dir, settings.dlt_dir, pipeline_name(settings))
    closed = []
    for name in waiting:
        with contextlib.suppress(FileNotFoundError):
            closed.append((settings.landing_dir / name).stat().st_mtime)
    return LandingBacklog(len(waiting), max(0.0, now - min(closed)) if closed else 0.0)


def storage_bytes(settings: Settings) -> dict[str, int]:
    return {
        area: sum(disk_bytes(path) for path in paths)
        for area, paths in storage_areas(settings).items()
    }


class _Cached:
    """A value read again at most every ``CACHE_SECONDS``, one reader at a time."""

    def __init__(self, read: Callable[[float], Any], clock: Callable[[], float]) -> None:
        self.read = read
        self.clock = clock
        self.lock = threading.Lock()
        self.value: tuple[float, Any] | None = None

    def get(self) -> Any:
        with self.lock:
            now = self.clock()
            if self.value is None or now - self.value[0] >= CACHE_SECONDS:
                self.value = (now, self.read(now))
            return self.value[1]


class MonitoringCollector(Collector):
    """The Dagster instance's and the data directory's figures, read when scraped. An
    instance that cannot be read (a broken ``dagster.yaml``, PostgreSQL down) leaves the last
    figures read and ``sluice_dagster_instance_up`` 0, and is logged when its error changes:
    the rest of ``/metrics`` still answers."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.clock = clock
        self.instance = _Cached(self._read_instance, clock)
        self.storage = _Cached(lambda _now: storage_bytes(settings), clock)
        self.backlog = _Cached(lambda now: landing_backlog(settings, now), clock)
        self.last_read: InstanceFigures = NO_INSTANCE
        self.error: str | None = None

    def _read_instance(self, now: float) -> InstanceFigures:
        try:
            self.last_read = read_instance(self.settings, now)
        except Exception as error:  # any storage's error: the scrape must still answer
            message = f"{type(error).__name__}: {error}".splitlines()[0]
            if message != self.error:
                log.warning(
                    "the Dagster instance in %s cannot be read: %s",
                    self.settings.dagster_home,
                    message,
                )
            self.error = message
            return self.last_read
        self.error = None
        return self.last_read

    def warm(self) -> None:
        """Read both once (importing Dagster takes seconds): the first scrape finds them."""
        try:
            self.instance.get()
            self.storage.get()
            self.backlog.get()
        except OSError as error:
            log.warning("the data directory's sizes cannot be read: %s", error)

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        figures: InstanceFigures = self.instance.get()
        now = self.clock()
        yield GaugeMetricFamily(
            "sluice_dagster_instance_up",
            "1 if the Dagster instance was read at the last look (or has no runs yet), 0 if "
            "it could not be (the sluice_etl_* and sluice_asset_* figures are older).",
            value=float(self.error is None),
        )
        success = GaugeMetricFamily(
            "sluice_etl_last_run_success",
            "1 if the job's last finished Dagster run succeeded, 0 if it failed or was canceled.",
            labels=["job"],
        )
        duration = GaugeMetricFamily(
            "sluice_etl_last_run_duration_seconds",
            "Start to end of the job's last finished Dagster run.",
            labels=["job"],
        )
        ended = GaugeMetricFamily(
            "sluice_etl_last_run_end_timestamp_seconds",
            "When the job's last finished Dagster run ended (Unix time).",
            labels=["job"],
        )
        for run in figures.last_runs:
            success.add_metric([run.job], float(run.status == "SUCCESS"))
            if run.duration is not None:
                duration.add_metric([run.job], run.duration)
            if run.ended_at is not None:
                ended.add_metric([run.job], run.ended_at)
        runs = GaugeMetricFamily(
            "sluice_etl_runs",
            "Dagster runs the instance holds, by status (delta() over a window: runs ended).",
            labels=["status"],
        )
        for status, count in sorted(figures.runs_by_status.items()):
            runs.add_metric([status], count)
        yield from (success, duration, ended, runs)

        materialized = GaugeMetricFamily(
            "sluice_asset_last_materialization_timestamp_seconds",
            "When the asset was last materialized (Unix time), for assets with a freshness policy.",
            labels=["asset"],
        )
        age = GaugeMetricFamily(
            "sluice_asset_age_seconds",
            "Seconds since the asset was last materialized, for assets with a freshness policy.",
            labels=["asset"],
        )
        state = GaugeMetricFamily(
            "sluice_asset_freshness_state",
            "1 for the asset's freshness state against its policy (PASS, WARN, FAIL, UNKNOWN "
            "before any materialization), 0 for the others.",
            labels=["asset", "state"],
        )
        for asset in figures.assets:
            if asset.last_materialized_at is not None:
                materialized.add_metric([asset.asset], asset.last_materialized_at)
                age.add_metric([asset.asset], max(0.0, now - asset.last_materialized_at))
            for name in FRESHNESS_STATES:
                state.add_metric([asset.asset, name], float(asset.freshness == name))
        yield from (materialized, age, state)

        load = GaugeMetricFamily(
            "sluice_load_rows",
            "Rows the last load wrote: loaded to raw.events, rejected to raw.rejected_events.",
            labels=["result"],
        )
        for result, rows in sorted(figures.load_rows.items()):
            load.add_metric([result], rows)
        yield load

        storage = GaugeMetricFamily(
            "sluice_storage_bytes",
            "Bytes of each area of the data directory (files and write-ahead logs).",
            labels=["area"],
        )
        for area, size in self.storage.get().items():
            storage.add_metric([area], size)
        yield storage

        backlog: LandingBacklog = self.backlog.get()
        yield GaugeMetricFamily(
            "sluice_landing_waiting_files",
            "Closed landing files (API segments and dropped files) no load has taken yet.",
            value=backlog.files,
        )
        yield GaugeMetricFamily(
            "sluice_landing_oldest_waiting_seconds",
            "Seconds since the oldest landing file waiting for the load was closed (0: none).",
            value=backlog.oldest_seconds,
        )


# -- the JSON of GET /v1/monitoring, from the registry ---------------------------------------


def histogram_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """The q-quantile of cumulative buckets (upper bound, count), interpolated within the
    bucket as Prometheus' ``histogram_quantile``; None without observations."""
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    lower, below = 0.0, 0.0
    for upper, count in ordered:
        if count >= rank:
            if math.isinf(upper):
                return lower  # beyond the last bound: the bound, as Prometheus answers
            if count == below:
                return upper
            return lower + (upper - lower) * (rank - below) / (count - below)
        lower, below = upper, count
    return None


class Samples:
    """One collection of a registry: each sample's value by name and labels."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.values: dict[str, list[tuple[dict[str, str], float]]] = collections.defaultdict(list)
        for family in registry.collect():
            for sample in family.samples:
                self.values[sample.name].append((sample.labels, sample.value))

    def get(self, name: str, **labels: str) -> float | None:
        for found, value in self.values.get(name, ()):
            if all(found.get(k) == v for k, v in labels.items()):
                return value
        return None

    def total(self, name: str, keep: Callable[[dict[str, str]], bool] = lambda _: True) -> float:
        return sum(value for labels, value in self.values.get(name, ()) if keep(labels))

    def by(self, name: str, label: str) -> dict[str, float]:
        return {labels[label]: value for labels, value in self.values.get(name, ())}

    def quantile(self, q: float, name: str) -> float | None:
        buckets = [(float(labels["le"]), value) for labels, value in self.values[name + "_bucket"]]
        return histogram_quantile(q, buckets)


class RateWindow:
    """A counter's rate per second over the last ``RATE_SECONDS`` or more: between now and
    the newest earlier look at least that old (the server's start at first)."""

    def __init__(self, started: float) -> None:
        self.looks: collections.deque[tuple[float, float]] = collections.deque([(started, 0.0)])
        self.lock = threading.Lock()

    def rate(self, now: float, value: float) -> float:
        with self.lock:
            while len(self.looks) > 1 and now - self.looks[1][0] >= RATE_SECONDS:
                self.looks.popleft()
            since, before = self.looks[0]
            self.looks.append((now, value))
        return (value - before) / (now - since) if now > since else 0.0


def _rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None or math.isnan(value) else round(value, digits)


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat(timespec="seconds")


def _run(run: RunFigures | None) -> dict[str, Any] | None:
    if run is None:
        return None
    return {
        "job": run.job,
        "run_id": run.run_id,
        "status": run.status,
        "started_at": _iso(run.started_at),
        "ended_at": _iso(run.ended_at),
        "duration_seconds": _rounded(run.duration, 3),
    }


def _failed_ingest(labels: dict[str, str]) -> bool:
    path = labels.get("path", "")
    return path.startswith(INGEST_PATH_PREFIX) and labels.get("status", "0") >= "400"


class MonitoringApi:
    """``GET /v1/monitoring``, ``POST /v1/monitoring/dashboard-load`` and the collector,
    registered in the server's ``registry``."""

    def __init__(
        self,
        settings: Settings,
        keys: KeyLookup,
        registry: CollectorRegistry,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keys = keys
        self.registry = registry
        self.clock = clock
        self.collector = MonitoringCollector(settings, clock)
        registry.register(self.collector)
        self.dashboard_load = Histogram(
            "sluice_dashboard_load_seconds",
            "Time from opening the dashboard to its first reports drawn, as its page reports.",
            buckets=DASHBOARD_BUCKETS,
            registry=registry,
        )
        self.ingest_rate = RateWindow(clock())

    @contextlib.asynccontextmanager
    async def warming(self) -> AsyncIterator[None]:
        """Reads the figures once in a thread while the server starts taking requests."""
        task = asyncio.create_task(asyncio.to_thread(self.collector.warm))
        yield
        if task.done():
            task.result()

    def routes(self) -> list[Route]:
        return [
            Route("/v1/monitoring", self.monitoring, methods=["GET"]),
            Route("/v1/monitoring/dashboard-load", self.dashboard_loaded, methods=["POST"]),
        ]

    @staticmethod
    def _json(body: Any, status: int = 200) -> Response:
        return Response(
            orjson.dumps(body), status, {"Cache-Control": "no-store"}, media_type="application/json"
        )

    def _refused(self, error: KeyRefused) -> Response:
        return self._json({"error": error.message, "limit": "read_key"}, error.status)

    async def dashboard_loaded(self, request: Request) -> Response:
        try:
            read_key(self.keys, request.headers.get("authorization", ""))
        except KeyRefused as error:
            return self._refused(error)
        body = await request.body()
        try:
            seconds = parse_json(body[:1024]).get("seconds")
        except (MalformedBody, AttributeError):
            seconds = None
        if (
            not isinstance(seconds, int | float)
            or isinstance(seconds, bool)
            or not 0 < seconds <= MAX_DASHBOARD_SECONDS
        ):
            message = f'send {{"seconds": x}} with 0 < x <= {MAX_DASHBOARD_SECONDS:g}'
            return self._json({"error": message, "limit": "parameters"}, 400)
        self.dashboard_load.observe(float(seconds))
        return self._json({"success": True})

    async def monitoring(self, request: Request) -> Response:
        try:
            read_key(self.keys, request.headers.get("authorization", ""))
        except KeyRefused as error:
            return self._refused(error)
        body = await asyncio.to_thread(self.figures)
        return self._json(body)

    def figures(self) -> dict[str, Any]:
        """Every figure of the panel, from one collection of the registry and the cached
        instance read."""
        samples = Samples(self.registry)
        instance: InstanceFigures = self.collector.instance.get()
        now = self.clock()
        accepted = samples.total("sluice_api_messages_accepted_total")
        lookups = samples.total("sluice_query_cache_requests_total")
        realtime_up = samples.get("sluice_realtime_worker_up")
        return {
            "generated_at": _iso(now),
            "runs": {
                "last": _run(instance.last_run),
                "jobs": [_run(run) for run in instance.last_runs],
                "by_status": instance.runs_by_status,
                # False when the last read failed (the server's log says why).
                "instance_readable": self.collector.error is None,
            },
            "freshness": [
                {
                    "asset": asset.asset,
                    "last_materialized_at": _iso(asset.last_materialized_at),
                    "age_seconds": None
                    if asset.last_materialized_at is None
                    else round(now - asset.last_materialized_at, 1),
                    "state": asset.freshness,
                }
                for asset in instance.assets
            ],
            "storage_bytes": {
                area: int(size) for area, size in samples.by("sluice_storage_bytes", "area").items()
            },
            "ingest": {
                "messages_per_second": round(self.ingest_rate.rate(now, accepted), 3),
                "accepted": int(accepted),
                "rejected": int(samples.total("sluice_api_messages_rejected_total")),
                "failed_requests": int(samples.total("sluice_api_responses_total", _failed_ingest)),
                "rate_limited": int(samples.total("sluice_api_requests_rate_limited_total")),
                "ack_p95_seconds": _rounded(
                    samples.quantile(0.95, "sluice_api_request_duration_seconds")
                ),
                "segments_waiting": samples.get("sluice_api_segments_waiting"),
                "landing_files_waiting": samples.get("sluice_landing_waiting_files"),
                "oldest_waiting_seconds": _rounded(
                    samples.get("sluice_landing_oldest_waiting_seconds"), 1
                ),
                "last_load_rows": instance.load_rows,
            },
            "query": {
                "requests": int(samples.get("sluice_query_duration_seconds_count") or 0),
                "p95_seconds": _rounded(samples.quantile(0.95, "sluice_query_duration_seconds")),
                "cache_hit_ratio": None
                if not lookups
                else _rounded(samples.get("sluice_query_cache_hit_ratio")),
                "snapshot_age_seconds": _rounded(
                    samples.get("sluice_serving_snapshot_age_seconds"), 1
                ),
            },
            "realtime": {
                "worker_up": None if realtime_up is None else bool(realtime_up),
                "lag_p95_seconds": _rounded(
                    samples.get("sluice_realtime_recent_lag_seconds", quantile="0.95")
                ),
            },
            "dashboard": {
                "loads": int(samples.get("sluice_dashboard_load_seconds_count") or 0),
                "load_p95_seconds": _rounded(
                    samples.quantile(0.95, "sluice_dashboard_load_seconds")
                ),
            },
        }
