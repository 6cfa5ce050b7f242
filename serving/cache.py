"""Results of the query API, kept per snapshot version for a while.

An entry is keyed by what was asked (report name or SQL, parameters, ``approx``) and belongs
to one snapshot version: when a new snapshot is published, the first request that sees it
empties the cache. Entries for a range of days that includes today (whose numbers still
change as events arrive) live 10 minutes; closed ranges live 24 hours, as only a new
snapshot changes them. An entry may carry extras (``extra``/``set_extra``: the query API keeps
a cached report's encoded JSON there), which live and go with it. The clock is injected, so
tests need not wait. Reads no environment.
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
        # key -> (expiry, value, extras)
        self._entries: OrderedDict[Hashable, tuple[float, Any, dict[Hashable, Any]]] = OrderedDict()
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
            self._entries[key] = (self.clock() + ttl, value, {})
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def extra(self, version: Hashable, key: Hashable, name: Hashable) -> Any | None:
        """The extra ``name`` of the live entry ``key`` (not counted as a lookup)."""
        with self._lock:
            if version != self._version:
                return None
            entry = self._entries.get(key)
            if entry is None or entry[0] <= self.clock():
                return None
            return entry[2].get(name)

    def set_extra(self, version: Hashable, key: Hashable, name: Hashable, value: Any) -> None:
        """Keep ``value`` beside the live entry ``key``, until the entry goes."""
        with self._lock:
            if version != self._version:
                return
            entry = self._entries.get(key)
            if entry is not None and entry[0] > self.clock():
                entry[2][name] = value
