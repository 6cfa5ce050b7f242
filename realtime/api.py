"""The live figures of ``sluice serve``, for read keys: ``GET /v1/live?minutes=N``.

One JSON answer from the real-time store (``realtime.read``) as ``sluice stream`` writes it:
the last N minutes (default 30, 1 to 1440) minute by minute with zeros where nothing
happened, the users active in the last 5 minutes (the minutes' sketches unioned), today so
far (UTC), the newest event time and the worker's counters. Keys are read and refused as the
query API does (``common.http.read_key``); refusals are JSON ``{"error": ..., "limit": ...}``.
Before any ``sluice stream`` has run there is no store, and the answer is a 503 that says
so; no answer names a folder of the server. The store is read in a thread (SQLite, WAL, so
the worker keeps writing). Reads no environment: settings come in through ``LiveApi``.

The answer also carries the tier's SLO figures: the ack-to-visible lag (``receivedAt`` to the
worker's commit) of the events committed in the last 5 minutes, p50 and p95, and whether the
worker is running (its heartbeat is younger than ``read.STALE_SECONDS``). ``/metrics`` gets
the same from ``RealtimeCollector``, read from the store when scraped, beside the route's
own latency and refusals; each request is one JSON line in the access log.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from common.http import KeyLookup, KeyRefused, log_access, read_key
from common.metrics import LATENCY_BUCKETS
from common.settings import Settings
from realtime import read, store
from realtime.windows import ADDED, DUPLICATES, INVALID_PREFIX, LATE, MINUTE_SECONDS, utc

DEFAULT_MINUTES = 30
MAX_MINUTES = 1440
ACTIVE_WINDOW = dt.timedelta(minutes=5)
SOURCE = "real-time tier (sluice stream)"
NOT_RUNNING = (
    "no `sluice stream` has run for this data directory yet, so there are no live figures; "
    "start it beside `sluice serve`"
)
UNREADABLE = "the real-time store cannot be read right now; try again in a few seconds"
# The lag figures cover the events committed in the last this many minutes.
LAG_WINDOW = dt.timedelta(minutes=5)


class LiveRefused(Exception):
    def __init__(self, limit: str, status: int, message: str) -> None:
        super().__init__(message)
        self.limit = limit
        self.status = status
        self.message = message


def _json(body: Any, status: int = 200) -> Response:
    return Response(
        orjson.dumps(body), status, {"Cache-Control": "no-store"}, media_type="application/json"
    )


def _minutes(request: Request) -> int:
    raw = request.query_params.get("minutes")
    if raw is None or raw == "":
        return DEFAULT_MINUTES
    try:
        minutes = int(raw)
    except ValueError:
        minutes = 0
    if not 1 <= minutes <= MAX_MINUTES:
        raise LiveRefused(
            "parameters", 400, f"minutes={raw!r}; use a whole number from 1 to {MAX_MINUTES}"
        )
    return minutes


def _figures(figures: read.Figures) -> dict[str, Any]:
    return {
        "events": figures.events,
        "orders": figures.orders,
        "revenue_usd": figures.revenue_usd,
        "active_users": figures.active_users,
    }


def _seconds(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


class RealtimeCollector(Collector):
    """The real-time tier's figures on ``/metrics``, read from the store when scraped:
    the ack-to-visible lag (a histogram since the store began, and p50/p95 of the last
    5 minutes), the worker's heartbeat age, the newest event's age and the worker's counts.
    Nothing while there is no store."""

    def __init__(self, path: Any, clock: Callable[[], float]) -> None:
        self.path = path
        self.clock = clock

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        try:
            figures = self._read()
        except (FileNotFoundError, sqlite3.Error):
            return
        yield from figures

    def _read(self) -> list[Metric]:
        now = self.clock()
        buckets, lag_sum = read.lag_histogram(self.path)
        cumulative, running = [], 0
        for index, upper in enumerate(store.LAG_BUCKETS):
            running += buckets.get(index, 0)
            cumulative.append(("+Inf" if upper == float("inf") else f"{upper:g}", running))
        histogram = HistogramMetricFamily(
            "sluice_realtime_lag_seconds",
            "Time from the ingest API's receivedAt to the stream worker's commit that made "
            "the event visible, per added event.",
            buckets=cumulative,
            sum_value=lag_sum,
        )
        end = utc((int(now) // MINUTE_SECONDS + 1) * MINUTE_SECONDS)
        recent = read.lag(self.path, end - LAG_WINDOW, end)
        quantiles = GaugeMetricFamily(
            "sluice_realtime_recent_lag_seconds",
            "Ack-to-visible lag of the events committed in the last 5 minutes, by quantile "
            "(absent without events).",
            labels=["quantile"],
        )
        for quantile, value in (("0.5", recent.p50), ("0.95", recent.p95)):
            if value is not None:
                quantiles.add_metric([quantile], value)
        heartbeat = read.heartbeat(self.path)
        up = GaugeMetricFamily(
            "sluice_realtime_worker_up",
            f"1 while the stream worker's heartbeat is under {read.STALE_SECONDS:g} s old.",
            value=float(heartbeat is not None and now - heartbeat < read.STALE_SECONDS),
        )
        metrics: list[Metric] = [histogram, quantiles, up]
        if heartbeat is not None:
            metrics.append(
                GaugeMetricFamily(
                    "sluice_realtime_worker_heartbeat_age_seconds",
                    "Seconds since the stream worker last committed or looked for work.",
                    value=max(0.0, now - heartbeat),
                )
            )
        newest = read.newest_event_at(self.path)
        if newest is not None:
            metrics.append(
                GaugeMetricFamily(
                    "sluice_realtime_newest_event_age_seconds",
                    "Seconds since the newest event time the stream worker has seen.",
                    value=now - newest.timestamp(),
                )
            )
        counts = read.counters(self.path)
        messages = GaugeMetricFamily(
            "sluice_realtime_messages",
            "Landing lines the stream worker has read, by outcome (a count kept in the "
            "store, so it survives restarts).",
            labels=["outcome"],
        )
        invalid = sum(v for k, v in counts.items() if k.startswith(INVALID_PREFIX))
        for outcome, value in (
            (ADDED, counts.get(ADDED, 0)),
            (DUPLICATES, counts.get(DUPLICATES, 0)),
            (LATE, counts.get(LATE, 0)),
            ("invalid", invalid),
        ):
            messages.add_metric([outcome], value)
        metrics.append(messages)
        return metrics


class LiveMetrics:
    """The live route's own figures, registered in ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.latency = Histogram(
            "sluice_live_duration_seconds",
            "Time to answer a /v1/live request.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.refusals = Counter(
            "sluice_live_refusals",
            "/v1/live requests refused, by the limit they hit (read_key, parameters, store).",
            ["limit"],
            registry=registry,
        )


class LiveApi:
    """``GET /v1/live`` over ``settings.realtime_store_path``; ``clock`` gives "now";
    metrics go to ``registry`` (one of its own when none is given)."""

    def __init__(
        self,
        settings: Settings,
        keys: KeyLookup,
        clock: Callable[[], float] = time.time,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.path = settings.realtime_store_path
        self.keys = keys
        self.clock = clock
        registry = registry or CollectorRegistry()
        self.metrics = LiveMetrics(registry)
        registry.register(RealtimeCollector(self.path, clock))

    def routes(self) -> list[Route]:
        """Mount these before the ingest API's ``/v1/{kind}``."""
        return [Route("/v1/live", self.live, methods=["GET"])]

    async def live(self, request: Request) -> Response:
        started = time.perf_counter()
        fields: dict[str, Any] = {}
        try:
            fields["reader"] = read_key(self.keys, request.headers.get("authorization", ""))
            minutes = fields["minutes"] = _minutes(request)
            body = await asyncio.to_thread(self.figures, minutes)
        except KeyRefused as error:
            response = self._refuse("read_key", error.status, error.message)
        except LiveRefused as error:
            response = self._refuse(error.limit, error.status, error.message)
        else:
            response = _json(body)
        return self._observe(started, request, response, fields)

    def _refuse(self, limit: str, status: int, message: str) -> Response:
        self.metrics.refusals.labels(limit).inc()
        return _json({"error": message, "limit": limit}, status)

    def _observe(
        self, started: float, request: Request, response: Response, fields: dict[str, Any]
    ) -> Response:
        elapsed = time.perf_counter() - started
        self.metrics.latency.observe(elapsed)
        log_access(request.method, request.url.path, response.status_code, elapsed, fields)
        return response

    def figures(self, minutes: int) -> dict[str, Any]:
        """The answer of ``/v1/live?minutes=minutes`` as of the clock."""
        now = self.clock()
        # Up to the end of the current minute, so the minute under way shows as it fills.
        end_second = (int(now) // MINUTE_SECONDS + 1) * MINUTE_SECONDS
        end = utc(end_second)
        start = end - dt.timedelta(minutes=minutes)
        try:
            per_minute = {f.start: f for f in read.windows(self.path, start, end)}
            active = read.total(self.path, end - ACTIVE_WINDOW, end)
            today = read.today_so_far(self.path, utc(now))
            newest = read.newest_event_at(self.path)
            counters = read.counters(self.path)
            lag = read.lag(self.path, end - LAG_WINDOW, end)
            heartbeat = read.heartbeat(self.path)
        except FileNotFoundError:
            raise LiveRefused("store", 503, NOT_RUNNING) from None
        except sqlite3.Error:  # a store the worker is creating, or a broken file
            raise LiveRefused("store", 503, UNREADABLE) from None
        empty = read.Figures(start, end, 0, 0, 0.0, 0.0)
        minute_rows = []
        for n in range(minutes):
            moment = start + dt.timedelta(minutes=n)
            minute_rows.append({"start": moment, **_figures(per_minute.get(moment, empty))})
        return {
            "source": SOURCE,
            "now": utc(now),
            "minutes": minute_rows,
            "active_users_5_minutes": active.active_users,
            "today": {"date": utc(now).date(), **_figures(today)},
            "newest_event_at": newest,
            "late": counters.get("late", 0),
            "invalid": {
                name.removeprefix("invalid: "): value
                for name, value in counters.items()
                if name.startswith("invalid: ")
            },
            "counters": counters,
            "lag": {
                "window_minutes": int(LAG_WINDOW.total_seconds() // 60),
                "events": lag.events,
                "p50_seconds": _seconds(lag.p50),
                "p95_seconds": _seconds(lag.p95),
            },
            "worker": {
                "heartbeat_at": None if heartbeat is None else utc(heartbeat),
                "running": heartbeat is not None and now - heartbeat < read.STALE_SECONDS,
            },
        }
