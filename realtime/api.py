"""The live figures of ``sluice serve``, for read keys: ``GET /v1/live?minutes=N``.

One JSON answer from the real-time store (``realtime.read``) as ``sluice stream`` writes it:
the last N minutes (default 30, 1 to 1440) minute by minute with zeros where nothing
happened, the users active in the last 5 minutes (the minutes' sketches unioned), today so
far (UTC), the newest event time and the worker's counters. Keys are read and refused as the
query API does (``common.http.read_key``); refusals are JSON ``{"error": ..., "limit": ...}``.
Before any ``sluice stream`` has run there is no store, and the answer is a 503 that says
so; no answer names a folder of the server. The store is read in a thread (SQLite, WAL, so
the worker keeps writing). Reads no environment: settings come in through ``LiveApi``.
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

from common.http import KeyLookup, KeyRefused, read_key
from common.settings import Settings
from realtime import read
from realtime.windows import MINUTE_SECONDS, utc

DEFAULT_MINUTES = 30
MAX_MINUTES = 1440
ACTIVE_WINDOW = dt.timedelta(minutes=5)
SOURCE = "real-time tier (sluice stream)"
NOT_RUNNING = (
    "no `sluice stream` has run for this data directory yet, so there are no live figures; "
    "start it beside `sluice serve`"
)
UNREADABLE = "the real-time store cannot be read right now; try again in a few seconds"


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


class LiveApi:
    """``GET /v1/live`` over ``settings.realtime_store_path``; ``clock`` gives "now"."""

    def __init__(
        self, settings: Settings, keys: KeyLookup, clock: Callable[[], float] = time.time
    ) -> None:
        self.path = settings.realtime_store_path
        self.keys = keys
        self.clock = clock

    def routes(self) -> list[Route]:
        """Mount these before the ingest API's ``/v1/{kind}``."""
        return [Route("/v1/live", self.live, methods=["GET"])]

    async def live(self, request: Request) -> Response:
        try:
            read_key(self.keys, request.headers.get("authorization", ""))
            minutes = _minutes(request)
            body = await asyncio.to_thread(self.figures, minutes)
        except KeyRefused as error:
            return _json({"error": error.message, "limit": "read_key"}, error.status)
        except LiveRefused as error:
            return _json({"error": error.message, "limit": error.limit}, error.status)
        return _json(body)

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
        }
