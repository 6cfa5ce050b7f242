"""Durable appends to landing segments, with group commit; crash recovery at startup.

Each source has one open segment, ``landing/sources/<source>/<time>-<pid>-<n>.jsonl.tmp``.
The loader only reads ``*.jsonl``, so an open segment is invisible to it; a segment is closed
(fsynced, renamed to ``.jsonl``, folder fsynced) once it reaches the size or age limit, or when
the server stops. Requests hand their lines to ``GroupCommitter``, which writes everything
that queued up while the previous fsync ran and fsyncs once for all of them: one fsync per
group, not per request. A request is answered only after its group's fsync.

On startup, ``recover`` closes segments a crashed server left open, keeping every complete
line and dropping a torn last line (its request was never answered). A lock file makes sure
only one server writes to a landing area. Reads no environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import fcntl
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from common.contract import LANDING_SUFFIX
from common.durable import fsync_path

OPEN_SUFFIX = LANDING_SUFFIX + ".tmp"
LOCK_NAME = ".ingest-api.lock"
# Buffers per writev call (the kernel's limit, 1024 on Linux).
_IOV_MAX = os.sysconf("SC_IOV_MAX")


class LandingLocked(RuntimeError):
    """Another ingest API process writes to this landing area."""


def _complete_length(handle: BinaryIO, size: int, chunk: int = 1 << 16) -> int:
    """Bytes up to and including the last newline, found by reading backwards from the end."""
    end = size
    while end > 0:
        start = max(0, end - chunk)
        handle.seek(start)
        found = handle.read(end - start).rfind(b"\n")
        if found >= 0:
            return start + found + 1
        end = start
    return 0


def close_segment(path: Path, complete: bool = False) -> Path | None:
    """Cut a torn last line, fsync, rename ``x.jsonl.tmp`` to ``x.jsonl``; drop it if empty.

    ``complete`` says the writer knows the file ends with a whole line (no scan needed).
    """
    with path.open("r+b") as handle:
        size = os.fstat(handle.fileno()).st_size
        keep = size if complete else _complete_length(handle, size)
        if keep < size:
            handle.truncate(keep)
        os.fsync(handle.fileno())
    if keep == 0:
        path.unlink()
        fsync_path(path.parent)
        return None
    closed = path.with_name(path.name[: -len(".tmp")])
    os.rename(path, closed)
    fsync_path(path.parent)
    return closed


def recover(sources_dir: Path) -> list[Path]:
    """Close every segment left open under ``sources_dir``; returns the closed segments."""
    if not sources_dir.is_dir():
        return []
    closed = [close_segment(path) for path in sorted(sources_dir.glob(f"*/*{OPEN_SUFFIX}"))]
    return [path for path in closed if path is not None]


def lock_landing(sources_dir: Path) -> int:
    """Hold an exclusive lock on the landing area for this process; returns the lock's fd."""
    sources_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(sources_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise LandingLocked(
            f"another `sluice serve` is writing to {sources_dir}; stop it or use another "
            "SLUICE_DATA_DIR"
        ) from None
    return fd


def _write_all(fd: int, lines: list[bytes]) -> int:
    """Write ``lines`` in order with ``writev``, which copies them into the kernel without
    joining them first and releases the GIL while it does; returns the bytes written."""
    total = 0
    for start in range(0, len(lines), _IOV_MAX):
        chunk = lines[start : start + _IOV_MAX]
        written = os.writev(fd, chunk)
        total += written
        size = sum(map(len, chunk))
        if written < size:
            # A short write (a full disk, a signal): the rest of this chunk with plain writes.
            view = memoryview(b"".join(chunk))[written:]
            while view:
                written = os.write(fd, view)
                view = view[written:]
                total += written
    return total


@dataclass
class _Segment:
    path: Path
    fd: int
    size: int
    opened_at: float


class SegmentWriter:
    """Appends lines to each source's open segment; not thread-safe (one committer thread)."""

    def __init__(self, sources_dir: Path, max_bytes: int, max_age_seconds: float) -> None:
        self.sources_dir = sources_dir
        self.max_bytes = max_bytes
        self.max_age_seconds = max_age_seconds
        self._open: dict[str, _Segment] = {}
        self._counter = 0

    def _segment(self, source: str) -> _Segment:
        segment = self._open.get(source)
        if segment is None:
            folder = self.sources_dir / source
            folder.mkdir(parents=True, exist_ok=True)
            self._counter += 1
            stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
            path = folder / f"{stamp}-{os.getpid()}-{self._counter:06d}{OPEN_SUFFIX}"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
            # The new name must survive a crash as surely as the lines written to it.
            fsync_path(folder)
            segment = self._open[source] = _Segment(path, fd, 0, time.monotonic())
        return segment

    def write(self, chunks: dict[str, list[bytes]]) -> None:
        """Append and fsync; on any error, cut every touched segment back and close it."""
        touched: list[tuple[_Segment, int]] = []
        try:
            for source, lines in chunks.items():
                segment = self._segment(source)
                touched.append((segment, segment.size))
                segment.size += _write_all(segment.fd, lines)
            for segment, _ in touched:
                os.fsync(segment.fd)
        except BaseException:
            # Cut each touched segment back to its last answered line and close it; the next
            # write opens a fresh segment, so no later line follows a torn one.
            for segment, size in touched:
                with contextlib.suppress(OSError):
                    os.ftruncate(segment.fd, size)
                self._open = {k: v for k, v in self._open.items() if v is not segment}
                with contextlib.suppress(OSError):
                    os.close(segment.fd)
                with contextlib.suppress(OSError):
                    close_segment(segment.path)
            raise
        self.rotate(lambda segment: segment.size >= self.max_bytes)

    def rotate(self, due: Callable[[_Segment], bool] | None = None) -> list[Path]:
        """Close segments that are due (by default: older than the age limit)."""
        now = time.monotonic()
        if due is None:

            def due(segment: _Segment) -> bool:
                return now - segment.opened_at >= self.max_age_seconds

        closed = []
        for source, segment in list(self._open.items()):
            if due(segment):
                del self._open[source]
                os.close(segment.fd)
                # Only whole lines are ever written (a failed write is cut back).
                path = close_segment(segment.path, complete=True)
                if path is not None:
                    closed.append(path)
        return closed

    def close_all(self) -> list[Path]:
        return self.rotate(lambda _segment: True)

    @property
    def open_segments(self) -> int:
        return len(self._open)


class GroupCommitter:
    """Batches appends from concurrent requests into one write and one fsync per group."""

    def __init__(
        self, writer: SegmentWriter, on_fsync: Callable[[float], None] | None = None
    ) -> None:
        self.writer = writer
        self._on_fsync = on_fsync
        self._pending: list[tuple[str, list[bytes], asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        # One thread: writes, fsyncs and rotations never interleave.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="segments")
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._commit_loop()),
            asyncio.create_task(self._rotate_loop()),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._pending:
            await self._commit_pending()
        await asyncio.get_running_loop().run_in_executor(self._executor, self.writer.close_all)
        self._executor.shutdown(wait=True)

    async def append(self, source: str, lines: list[bytes]) -> None:
        """Return once ``lines`` are on disk (fsynced); raise if they could not be written."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((source, lines, future))
        self._wake.set()
        await future

    def _write(self, chunks: dict[str, list[bytes]]) -> None:
        started = time.perf_counter()
        self.writer.write(chunks)
        if self._on_fsync is not None:
            self._on_fsync(time.perf_counter() - started)

    async def _commit_pending(self) -> None:
        group, self._pending = self._pending, []
        chunks: dict[str, list[bytes]] = {}
        for source, lines, _ in group:
            chunks.setdefault(source, []).extend(lines)
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._write, chunks)
        except Exception as error:
            for _, _, future in group:
                if not future.done():
                    future.set_exception(error)
        else:
            for _, _, future in group:
                if not future.done():
                    future.set_result(None)

    async def _commit_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                await self._commit_pending()

    async def _rotate_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(1.0, self.writer.max_age_seconds / 4))
            await loop.run_in_executor(self._executor, self.writer.rotate)
