"""The stream worker: landing lines in, minute windows out, batch by batch.

Each step reads a batch from its source (``realtime.source``): in tail mode what the landing
segments gained since the committed offsets (``realtime.tail``, at most ``BATCH_BYTES``), in
NATS mode (``SLUICE_STREAM_NATS_URL`` set) the messages a durable JetStream consumer hands it
(``realtime.jetstream``). It parses and checks the lines, looks their messageIds up in the
dedup horizon, folds them into minute windows (``realtime.windows``) and commits the windows,
the offsets and the counters in one transaction (``realtime.store``); then the source moves
past the batch (JetStream: acks it). ``run`` repeats that until told to stop; ``sluice
stream`` runs it in its own process.

Tail mode allows one worker per data directory; NATS mode, several, which share the
consumer and the store (a lock file beside the store, taken exclusive or shared, keeps the
two modes apart). Whatever the mode, the dedup lookup, the fold and the commit run under a
second lock file, so two workers committing the same messageId (a redelivery) count it once
and each folds from the newest watermark; SQLite would serialize the commits anyway, and the
parsing, the bulk of the work, stays outside. Settings: ``SLUICE_DATA_DIR``,
``SLUICE_REALTIME_LATENESS_SECONDS``, ``SLUICE_REALTIME_RETENTION_DAYS``, and NATS mode's
``SLUICE_STREAM_NATS_*`` (``common.settings``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from common.contract import TimestampParser
from common.settings import Settings
from realtime import store
from realtime.revenue import load_rates
from realtime.source import Source
from realtime.tail import TailSource
from realtime.windows import ADDED, DUPLICATES, INVALID_PREFIX, LATE, LINES, fold, parse_lines

# About this many bytes of landing lines per transaction (tail mode).
BATCH_BYTES = 8 << 20
LOCK_NAME = ".stream.lock"
COMMIT_LOCK_NAME = ".stream-commit.lock"
# How often an idle worker records that it is alive; readers call a worker stale after
# realtime.read.STALE_SECONDS without a heartbeat.
HEARTBEAT_SECONDS = 5.0


class WorkerLocked(RuntimeError):
    """Another ``sluice stream`` works on this data directory, and the modes do not allow
    both."""


@dataclass(frozen=True)
class Step:
    """What one committed batch did."""

    # Where the lines came from: "2 segments", "the stream".
    origin: str
    lines: int
    added: int
    duplicates: int
    late: int
    invalid: int
    max_event_at: float | None


class StreamWorker:
    """Reads the ingest API's messages (the landing segments of one data directory, or the
    JetStream stream) into the data directory's real-time store."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        nats_mode = bool(settings.stream_nats_url)
        path = settings.realtime_store_path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(path.parent / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(
                self._lock_fd, (fcntl.LOCK_SH if nats_mode else fcntl.LOCK_EX) | fcntl.LOCK_NB
            )
        except BlockingIOError:
            os.close(self._lock_fd)
            raise WorkerLocked(
                f"another `sluice stream` is working on {settings.data_dir}; stop it first "
                "(tail mode takes one worker per data directory; NATS mode, with "
                "SLUICE_STREAM_NATS_URL set, takes several, but not beside a tail mode one)"
            ) from None
        self._commit_lock_fd = os.open(
            path.parent / COMMIT_LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644
        )
        self._con = store.connect(path)
        self._source: Source | None = None
        try:
            store.beat(self._con)
            if nats_mode:
                from realtime.jetstream import JetStreamSource

                self._source = JetStreamSource(settings)
            else:
                offsets = store.offsets(self._con)
                self._source = TailSource(settings.api_sources_dir, offsets, BATCH_BYTES)
        except BaseException:
            self.close()
            raise
        self._timestamps = TimestampParser()
        self._rates = load_rates()

    @property
    def reading(self) -> str:
        """What the worker reads."""
        assert self._source is not None
        return self._source.description

    def close(self) -> None:
        if self._source is not None:
            self._source.close()
        self._con.close()
        for fd in (self._commit_lock_fd, self._lock_fd):
            with contextlib.suppress(OSError):
                os.close(fd)

    @contextlib.contextmanager
    def _committing(self) -> Iterator[None]:
        """The one worker of the store that looks up ids, folds and commits right now."""
        fcntl.flock(self._commit_lock_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._commit_lock_fd, fcntl.LOCK_UN)

    def __enter__(self) -> StreamWorker:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def step(self) -> Step | None:
        """Read, fold and commit one batch; None when the source holds nothing new."""
        assert self._source is not None
        batch = self._source.read()
        if batch is None:
            return None
        parsed = [
            item
            for block in batch.blocks
            for item in parse_lines(block, self._timestamps, self._rates)
        ]
        ids = [item.message_id for item in parsed if not isinstance(item, str)]
        with self._committing():
            folded = fold(
                parsed,
                already_seen=store.seen_among(self._con, ids),
                # The store's, which other workers of NATS mode move too.
                max_event_at=store.max_event_at(self._con),
                lateness_seconds=self.settings.realtime_lateness_seconds,
            )
            store.commit(self._con, folded, batch.offsets, self.settings.realtime_retention_days)
        self._source.committed(batch)
        counts = folded.counters
        return Step(
            origin=batch.origin,
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
        poll_seconds: float | None = None,
    ) -> None:
        """Process batches until ``stop`` is set, polling every ``poll_seconds`` when idle
        (by default, as often as the source asks).
        Each commit records the worker's heartbeat; when idle, it is recorded every
        ``HEARTBEAT_SECONDS``, so readers can tell an idle worker from a stopped one."""
        last_beat = time.monotonic()
        while not stop.is_set():
            step = self.step()
            if step is None:
                if time.monotonic() - last_beat >= HEARTBEAT_SECONDS:
                    store.beat(self._con)
                    last_beat = time.monotonic()
                assert self._source is not None
                stop.wait(self._source.idle_seconds if poll_seconds is None else poll_seconds)
            else:
                last_beat = time.monotonic()
                on_step(step)
