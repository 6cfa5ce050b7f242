"""One view of the last N days for read keys: ``GET /v1/daily?days=N``, each day from the
tier that has it, labelled.

Days the batch tier has built come from the marts in the serving snapshot (``dau``,
``revenue_daily``, ``event_counts_daily``: exact, deduplicated over the days around each
event). Today, and any recent day the marts do not have yet (the nightly build has not run),
come from the real-time tier's minute windows (``realtime.read``): seconds old, active users
an HLL estimate, late events left out; once the batch tier builds the day, its row switches
to the marts and the reconciliation check compares the two. Days neither tier has are left
out rather than shown as zeros.

It lives here, above the stages, because it is the one place that reads both: ``serving``
and ``realtime`` never import each other. Keys are read and refused as by the other read
routes (``common.http.read_key``); the snapshot is read through the query API's shared
connection for saved reports (reviewed SQL, in this process), the store in a thread.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from common.http import KeyLookup, KeyRefused, log_access, read_key
from common.settings import Settings
from realtime import read
from serving.query_api import QueryApi
from serving.query_runner import QueryRefused, SnapshotMissing

DEFAULT_DAYS = 14
MAX_DAYS = 90
MARTS = "marts"
REALTIME = "real-time tier"
SOURCES = {
    MARTS: "batch tier: the marts of the serving snapshot (exact; built after the day ends)",
    REALTIME: (
        "real-time tier (sluice stream): minute windows, seconds old; active users are an "
        "HLL estimate (about 1%) and events later than the watermark are left out until the "
        "batch tier builds the day"
    ),
}
MARTS_SQL = """
with events as (
    select event_date, sum(events) as events
    from marts.event_counts_daily
    where event_date between $start and $end
    group by event_date
)
select
    dau.event_date,
    coalesce(events.events, 0) as events,
    coalesce(revenue.orders, 0) as orders,
    coalesce(revenue.revenue_usd, 0) as revenue_usd,
    dau.active_users
from marts.dau as dau
left join events on dau.event_date = events.event_date
left join marts.revenue_daily as revenue on dau.event_date = revenue.event_date
where dau.event_date between $start and $end
order by dau.event_date
"""


def _json(body: Any, status: int = 200) -> Response:
    return Response(
        orjson.dumps(body), status, {"Cache-Control": "no-store"}, media_type="application/json"
    )


class DailyRefused(Exception):
    def __init__(self, limit: str, status: int, message: str) -> None:
        super().__init__(message)
        self.limit = limit
        self.status = status
        self.message = message


def _days(request: Request) -> int:
    raw = request.query_params.get("days")
    if raw is None or raw == "":
        return DEFAULT_DAYS
    try:
        days = int(raw)
    except ValueError:
        days = 0
    if not 1 <= days <= MAX_DAYS:
        raise DailyRefused(
            "parameters", 400, f"days={raw!r}; use a whole number from 1 to {MAX_DAYS}"
        )
    return days


class DailyApi:
    """``GET /v1/daily`` over the query API's snapshot and the real-time store."""

    def __init__(
        self,
        settings: Settings,
        keys: KeyLookup,
        query_api: QueryApi,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store_path = settings.realtime_store_path
        self.keys = keys
        self.query_api = query_api
        self.clock = clock

    def routes(self) -> list[Route]:
        return [Route("/v1/daily", self.daily, methods=["GET"])]

    async def daily(self, request: Request) -> Response:
        started = time.perf_counter()
        fields: dict[str, Any] = {}
        try:
            fields["reader"] = read_key(self.keys, request.headers.get("authorization", ""))
            days = fields["days"] = _days(request)
            body = await asyncio.to_thread(self.figures, days)
        except KeyRefused as error:
            response = _json({"error": error.message, "limit": "read_key"}, error.status)
        except DailyRefused as error:
            response = _json({"error": error.message, "limit": error.limit}, error.status)
        else:
            response = _json(body)
        elapsed = time.perf_counter() - started
        log_access(request.method, request.url.path, response.status_code, elapsed, fields)
        return response

    def figures(self, days: int) -> dict[str, Any]:
        """The answer of ``/v1/daily?days=days`` as of the clock: oldest day first."""
        today = dt.datetime.fromtimestamp(self.clock(), dt.UTC).date()
        first = today - dt.timedelta(days=days - 1)
        rows: dict[dt.date, dict[str, Any]] = {}
        run_id = None
        try:
            result = self.query_api.reports_snapshot.run(MARTS_SQL, {"start": first, "end": today})
        except SnapshotMissing:
            result = None
        except QueryRefused as error:
            raise DailyRefused(error.limit, error.status, error.message) from None
        if result is not None:
            run_id = result.run_id
            for day, events, orders, revenue, users in result.rows:
                rows[day] = {
                    "date": day,
                    "events": int(events),
                    "orders": int(orders),
                    "revenue_usd": round(float(revenue), 2),
                    "active_users": float(users),
                    "source": MARTS,
                    "final": True,
                }
        live = self._realtime_days(first, today, skip=set(rows))
        rows |= live
        if not rows:
            raise DailyRefused(
                "data",
                503,
                "neither tier has these days yet: build the marts (`sluice materialize`) or "
                "start `sluice stream` beside `sluice serve`",
            )
        return {
            "days": [rows[day] for day in sorted(rows)],
            "sources": SOURCES,
            "snapshot_run_id": run_id,
            "today": today,
        }

    def _realtime_days(
        self, first: dt.date, today: dt.date, skip: set[dt.date]
    ) -> dict[dt.date, dict[str, Any]]:
        """The days of ``[first, today]`` not in ``skip`` that the real-time store has."""
        rows: dict[dt.date, dict[str, Any]] = {}
        day = first
        try:
            while day <= today:
                if day not in skip:
                    start = dt.datetime.combine(day, dt.time(), dt.UTC)
                    figures = read.total(self.store_path, start, start + dt.timedelta(days=1))
                    if figures.events:
                        rows[day] = {
                            "date": day,
                            "events": figures.events,
                            "orders": figures.orders,
                            "revenue_usd": round(figures.revenue_usd, 2),
                            "active_users": round(figures.active_users, 1),
                            "source": REALTIME,
                            "final": False,
                        }
                day += dt.timedelta(days=1)
        except (FileNotFoundError, sqlite3.Error):  # no worker has run, or it is creating it
            return {}
        return rows
