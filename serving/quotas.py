"""Per-key quotas of the query API: queries per minute and rows scanned per UTC day.

Kept in memory by the server (a restart forgets them), keyed by the read key's name. The
clock is injected for tests. Reads no environment: the limits come from ``Settings``.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable

from serving.guardrails import QueryRefused


class KeyQuotas:
    def __init__(
        self, per_minute: int, scan_rows_per_day: int, clock: Callable[[], float] = time.time
    ) -> None:
        self.per_minute = per_minute
        self.scan_rows_per_day = scan_rows_per_day
        self.clock = clock
        self._recent: defaultdict[str, deque[float]] = defaultdict(deque)
        self._scanned: dict[str, tuple[dt.date, int]] = {}
        self._lock = threading.Lock()

    def _today(self) -> dt.date:
        return dt.datetime.fromtimestamp(self.clock(), dt.UTC).date()

    def admit(self, name: str) -> None:
        """Count one request of ``name``; refuse when it is over either quota."""
        now = self.clock()
        with self._lock:
            recent = self._recent[name]
            while recent and recent[0] <= now - 60:
                recent.popleft()
            if len(recent) >= self.per_minute:
                wait = int(recent[0] + 60 - now) + 1
                raise QueryRefused(
                    "queries_per_minute",
                    429,
                    f"read key {name!r} sent {self.per_minute} queries in the last minute "
                    f"(SLUICE_QUERY_PER_MINUTE); retry in {wait} s",
                )
            recent.append(now)
            day, used = self._scanned.get(name, (self._today(), 0))
            if day == self._today() and used >= self.scan_rows_per_day:
                raise QueryRefused(
                    "rows_scanned_per_day",
                    429,
                    f"read key {name!r} scanned {used:,} rows today; the limit is "
                    f"{self.scan_rows_per_day:,} per UTC day (SLUICE_QUERY_SCAN_ROWS_PER_DAY)",
                )

    def charge(self, name: str, rows: int) -> None:
        """Add the rows a query of ``name`` scanned to today's total."""
        today = self._today()
        with self._lock:
            day, used = self._scanned.get(name, (today, 0))
            self._scanned[name] = (today, (used if day == today else 0) + rows)
