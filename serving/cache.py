"""Results of the query API, kept per snapshot version for a while.

An entry is keyed by what was asked (report name or SQL, parameters, ``approx``) and belongs
to one snapshot version: when a new snapshot is published, the first request that sees it
empties the cache. Entries for a range of days that includes today (whose numbers still
change as events arrive) live 10 minutes; closed ranges live 24 hours, as only a new
snapshot changes them. The clock is injected, so tests need not wait. Reads no environment.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

OPEN_RANGE_TTL = 10 * 60
CLOSED_RANGE_TTL = 24 * 60 * 60


def ttl_for(end: dt.date | None, today: dt.date) -> int:
    """Seconds a result may be served: short while its range (or an ad-hoc query) is open."""
    if end is None or end >= today:
        return OPEN_RANGE_TTL
    return CLOSED_RANGE_TTL


class ResultCache:
    """A bounded map of results for the current snapshot version, with per-entry expiry."""

    def __init__(self, clock: Callable[[], float] = time.time, max_entries: int = 1000) -> None:
        self.clock = clock
        self.max_entries = max_entries
        self.hits = 0
        self.misses = 0
        self._version: Hashable = None
        self._entries: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def _see(self, version: Hashable) -> None:
        if version != self._version:
            self._entries.clear()
            self._version = version

    def get(self, version: Hashable, key: Hashable) -> Any | None:
        with self._lock:
            self._see(version)
            entry = self._entries.get(key)
            if entry is None or entry[0] <= self.clock():
                self._entries.pop(key, None)
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[1]

    def put(self, version: Hashable, key: Hashable, value: Any, ttl: float) -> None:
        with self._lock:
            self._see(version)
            self._entries[key] = (self.clock() + ttl, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
