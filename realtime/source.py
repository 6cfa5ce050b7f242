"""What the stream worker reads from: a ``Source`` gives batches of landing lines, and is told
when a batch is committed.

Two sources, one worker (``realtime.worker``): tail mode's ``realtime.tail.TailSource`` reads
the landing segments by byte offset, and NATS mode's ``realtime.jetstream.JetStreamSource``
pulls the messages the ingest API published to JetStream. Either way a batch is whole landing
lines, parsed, checked, deduplicated, folded and committed the same way. Reads no environment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Batch:
    """Landing lines to fold and commit as one transaction."""

    # Whole lines, each ending with a newline.
    blocks: list[bytes]
    # Where they came from, for the worker's report: "2 segments", "the stream".
    origin: str
    # Segment offsets (tail mode) that the store commits with the batch.
    offsets: Mapping[str, int] = field(default_factory=dict)
    # What the source needs back once the batch is committed (JetStream: the messages to ack).
    receipt: Any = None


class Source(Protocol):
    # What the worker reads, for `sluice stream`'s first line.
    description: str
    # How long the worker waits after a read that found nothing (a source whose read waits
    # for new lines itself says 0).
    idle_seconds: float

    def read(self) -> Batch | None:
        """The next batch, or None when there is nothing new now."""
        ...

    def committed(self, batch: Batch) -> None:
        """``batch`` is in the store: move past it for good."""
        ...

    def close(self) -> None: ...
