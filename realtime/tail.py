"""Read the ingest API's landing segments by byte offset: what is new since the last read,
whole lines only.

A segment is ``landing/sources/<source>/<stem>.jsonl.tmp`` while ``sluice serve`` appends to
it and ``<stem>.jsonl`` once closed (``ingestion/api/segments.py``); its identity is
``<source>/<stem>``, so an offset read in the open file carries over to the closed one. Only
bytes up to the last newline are returned: the API writes whole lines and fsyncs them before
answering, so a line without its newline is one still being written. A closed segment read to
its end never changes again and is not looked at any more. ``TailSource`` is tail mode's
source of the stream worker (``realtime.source``). Reads no environment.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from common.contract import LANDING_SUFFIX
from realtime.source import Batch

OPEN_SUFFIX = LANDING_SUFFIX + ".tmp"


@dataclass(frozen=True)
class Chunk:
    """New whole lines of one segment: bytes ``start`` to ``end`` of it."""

    segment: str
    start: int
    end: int
    data: bytes


def segment_id(path: Path) -> str:
    """``<source>/<stem>``: the same for a segment open and closed."""
    name = path.name
    for suffix in (OPEN_SUFFIX, LANDING_SUFFIX):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return f"{path.parent.name}/{name}"


def _segments(sources_dir: Path) -> dict[str, Path]:
    """Every segment, open or closed, by identity, oldest first across sources: by the time
    its name starts with, then by source. A worker catching up on a backlog of several write
    keys then reads them side by side in time, so the watermark that one source's segments
    move does not make the others' events of the same minutes late."""
    found: dict[str, Path] = {}
    for pattern in (f"*/*{OPEN_SUFFIX}", f"*/*{LANDING_SUFFIX}"):
        # Closed after open: a segment renamed between the two listings is found closed.
        for path in sources_dir.glob(pattern):
            found[segment_id(path)] = path
    return dict(sorted(found.items(), key=lambda item: item[0].split("/", 1)[::-1]))


def _open(path: Path) -> tuple[int, bool] | None:
    """A descriptor for the segment and whether it is closed; it may have just been renamed
    from open to closed. None when it is gone."""
    candidates = [path]
    if path.name.endswith(OPEN_SUFFIX):
        candidates.append(path.with_name(path.name[: -len(".tmp")]))
    for candidate in candidates:
        with contextlib.suppress(FileNotFoundError):
            return os.open(candidate, os.O_RDONLY), not candidate.name.endswith(OPEN_SUFFIX)
    return None


def _whole_lines(fd: int, start: int, size: int, budget: int) -> bytes:
    """Bytes from ``start`` up to the last newline within ``budget`` bytes (more when one line
    is longer than the budget)."""
    data = os.pread(fd, min(size - start, budget), start)
    cut = data.rfind(b"\n")
    while cut < 0 and start + len(data) < size:
        data += os.pread(fd, min(size - start - len(data), budget), start + len(data))
        cut = data.rfind(b"\n")
    return data[: cut + 1]


class SegmentTail:
    """Finds the new whole lines of every segment under ``sources_dir`` past given offsets."""

    def __init__(self, sources_dir: Path) -> None:
        self.sources_dir = sources_dir
        # Closed segments read to their end: immutable, so never read again by this process.
        self._finished: set[str] = set()

    def read(self, offsets: Mapping[str, int], budget: int) -> list[Chunk]:
        """New lines past ``offsets`` (0 for a segment not in it), about ``budget`` bytes at
        most, oldest segments first."""
        chunks: list[Chunk] = []
        for segment, path in _segments(self.sources_dir).items():
            if budget <= 0:
                break
            if segment in self._finished:
                continue
            opened = _open(path)
            if opened is None:
                continue
            fd, closed = opened
            try:
                size = os.fstat(fd).st_size
                start = offsets.get(segment, 0)
                data = _whole_lines(fd, start, size, budget) if size > start else b""
            finally:
                os.close(fd)
            if closed and start + len(data) >= size:
                self._finished.add(segment)
            if data:
                chunks.append(Chunk(segment, start, start + len(data), data))
            if size - start > budget:
                # The budget cut this segment short: its rest comes before any later segment.
                break
            budget -= len(data)
        return chunks


class TailSource:
    """Tail mode: the new lines of the landing segments past the offsets the store committed,
    about ``budget`` bytes per batch."""

    idle_seconds = 0.2

    def __init__(self, sources_dir: Path, offsets: Mapping[str, int], budget: int) -> None:
        self.description = f"the landing segments in {sources_dir}"
        self._tail = SegmentTail(sources_dir)
        self._offsets = dict(offsets)
        self._budget = budget

    def read(self) -> Batch | None:
        chunks = self._tail.read(self._offsets, self._budget)
        if not chunks:
            return None
        count = len(chunks)
        return Batch(
            blocks=[chunk.data for chunk in chunks],
            origin=f"{count} segment" + ("" if count == 1 else "s"),
            offsets={chunk.segment: chunk.end for chunk in chunks},
        )

    def committed(self, batch: Batch) -> None:
        self._offsets.update(batch.offsets)

    def close(self) -> None:
        pass
