"""The stream worker of tail mode: landing segments in, minute windows out, batch by batch.

Each step reads what the segments gained since the committed offsets (``realtime.tail``, at
most ``BATCH_BYTES``), parses and checks it, looks its messageIds up in the dedup horizon,
folds it into minute windows (``realtime.windows``) and commits the windows, the offsets and
the counters in one transaction (``realtime.store``). ``run`` repeats that every
``POLL_SECONDS`` until told to stop; ``sluice stream`` runs it in its own process. One worker
per data directory (a lock file beside the store). Settings: ``SLUICE_DATA_DIR``,
``SLUICE_REALTIME_LATENESS_SECONDS``, ``SLUICE_REALTIME_RETENTION_DAYS`` (``common.settings``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from common.contract import TimestampParser
from common.settings import Settings
from realtime import store
from realtime.revenue import load_rates
from realtime.tail import SegmentTail
from realtime.windows import ADDED, DUPLICATES, INVALID_PREFIX, LATE, LINES, fold, parse_lines

POLL_SECONDS = 0.2
# About this many bytes of landing lines per transaction.
BATCH_BYTES = 8 << 20
LOCK_NAME = ".stream.lock"
# How often an idle worker records that it is alive; readers call a worker stale after
# realtime.read.STALE_SECONDS without a heartbeat.
HEARTBEAT_SECONDS = 5.0


class WorkerLocked(RuntimeError):
    """Another ``sluice stream`` works on this data directory."""


@dataclass(frozen=True)
class Step:
    """What one committed batch did."""

    segments: int
    lines: int
    added: int
    duplicates: int
    late: int
    invalid: int
    max_event_at: float | None


class StreamWorker:
    """Reads the ingest API's segments of one data directory into its real-time store."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        path = settings.realtime_store_path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(path.parent / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise WorkerLocked(
                f"another `sluice stream` is working on {settings.data_dir}; stop it first"
            ) from None
        self._con = store.connect(path)
        store.beat(self._con)
        self._tail = SegmentTail(settings.api_sources_dir)
        self._timestamps = TimestampParser()
        self._rates = load_rates()
        self._offsets = store.offsets(self._con)
        self._max_event_at = store.max_event_at(self._con)

    def close(self) -> None:
        self._con.close()
        with contextlib.suppress(OSError):
            os.close(self._lock_fd)

    def __enter__(self) -> StreamWorker:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def step(self) -> Step | None:
        """Read, fold and commit one batch; None when the segments hold nothing new."""
        chunks = self._tail.read(self._offsets, BATCH_BYTES)
        if not chunks:
            return None
        parsed = [
            item
            for chunk in chunks
            for item in parse_lines(chunk.data, self._timestamps, self._rates)
        ]
        ids = [item.message_id for item in parsed if not isinstance(item, str)]
        folded = fold(
            parsed,
            already_seen=store.seen_among(self._con, ids),
            max_event_at=self._max_event_at,
            lateness_seconds=self.settings.realtime_lateness_seconds,
        )
        new_offsets = {chunk.segment: chunk.end for chunk in chunks}
        store.commit(self._con, folded, new_offsets, self.settings.realtime_retention_days)
        self._offsets.update(new_offsets)
        self._max_event_at = folded.max_event_at
        counts = folded.counters
        return Step(
            segments=len(chunks),
            lines=counts[LINES],
            added=counts[ADDED],
            duplicates=counts[DUPLICATES],
            late=counts[LATE],
            invalid=sum(v for k, v in counts.items() if k.startswith(INVALID_PREFIX)),
            max_event_at=folded.max_event_at,
        )

    def run_once(self, on_step: Callable[[Step], None] = lambda _step: None) -> int:
        """Process everything there is now; returns the batches committed."""
        batches = 0
        while (step := self.step()) is not None:
            batches += 1
            on_step(step)
        return batches

    def run(
        self,
        stop: threading.Event,
        on_step: Callable[[Step], None] = lambda _step: None,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        """Process batches until ``stop`` is set, polling every ``poll_seconds`` when idle.
        Each commit records the worker's heartbeat; when idle, it is recorded every
        ``HEARTBEAT_SECONDS``, so readers can tell an idle worker from a stopped one."""
        last_beat = time.monotonic()
        while not stop.is_set():
            step = self.step()
            if step is None:
                if time.monotonic() - last_beat >= HEARTBEAT_SECONDS:
                    store.beat(self._con)
                    last_beat = time.monotonic()
                stop.wait(poll_seconds)
            else:
                last_beat = time.monotonic()
                on_step(step)
