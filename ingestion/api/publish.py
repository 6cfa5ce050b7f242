"""NATS JetStream mode: publish each message the API landed to the real-time tier's stream,
and wait for JetStream to acknowledge every one before the HTTP answer.

Only when ``SLUICE_STREAM_NATS_URL`` is set (``common.stream`` holds the stream's names and
configuration). The landing segments stay what the batch tier loads; the stream is an extra
copy for ``sluice stream`` workers on other processes or machines. A request is answered only
after its lines are fsynced in the landing segment *and* acknowledged by JetStream (a PubAck:
JetStream has stored the message in the stream), so an acknowledged event is in both. When
publishing fails or JetStream does not answer within ``ACK_TIMEOUT_SECONDS``, the request gets
a 503 and the client retries: its retry lands again (the loader and the worker count a
messageId once) and JetStream drops the copies it already stored (``Nats-Msg-Id``).
Publishing is pipelined: every message of a request is sent, then every PubAck awaited.
Reads no environment: the settings come in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram

from common import stream
from common.settings import Settings

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.js import JetStreamContext
    from nats.js.api import PubAck

ACK_TIMEOUT_SECONDS = 5.0
# PubAcks awaited at once across requests: two full batches.
MAX_PENDING = 5000

log = logging.getLogger("sluice.api")


class PublishFailed(RuntimeError):
    """JetStream did not acknowledge every message of a request."""


class Publisher:
    """One NATS connection per server process, shared by all requests."""

    def __init__(self, settings: Settings, registry: CollectorRegistry) -> None:
        self.settings = settings
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._latency = Histogram(
            "sluice_api_publish_seconds",
            "Time to publish a request's messages to NATS JetStream and get every PubAck.",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
            registry=registry,
        )

    async def start(self) -> None:
        """Connect and create (or update) the stream; raises ``stream.StreamUnavailable``."""
        self._nc = await stream.connect(self.settings, "sluice serve")
        self._js = self._nc.jetstream(publish_async_max_pending=MAX_PENDING)
        try:
            await stream.ensure_stream(self._js, self.settings)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()
        self._nc = self._js = None

    async def publish(self, source: str, lines: list[bytes], ids: list[str | None]) -> None:
        """Publish ``lines`` (without their newlines), each with its messageId (None: no
        dedup id); return once JetStream acknowledged all of them, else raise PublishFailed."""
        if not lines:
            return
        js = self._js
        if js is None or self._nc is None or not self._nc.is_connected:
            # Fail at once rather than after the ack timeout: the client retries anyway.
            raise PublishFailed("not connected to NATS (reconnecting)")
        from nats.errors import Error

        started = time.perf_counter()
        subject = stream.subject(self.settings.stream_nats_stream, source)
        header = stream.MSG_ID_HEADER
        futures: list[asyncio.Future[PubAck]] = []
        try:
            # One deadline for the whole request, not one timer per message (nats-py's
            # per-message wait_stall costs a timer task each: a third of the time).
            async with asyncio.timeout(ACK_TIMEOUT_SECONDS):
                for line, message_id in zip(lines, ids, strict=True):
                    headers = None if message_id is None else {header: message_id}
                    futures.append(await js.publish_async(subject, line, headers=headers))
                await asyncio.gather(*futures)
        except TimeoutError:
            acked = sum(future.done() and not future.cancelled() for future in futures)
            raise PublishFailed(
                f"NATS JetStream acknowledged {acked} of {len(lines)} messages within "
                f"{ACK_TIMEOUT_SECONDS:g} s"
            ) from None
        except Error as error:
            raise PublishFailed(f"NATS JetStream refused a message ({error!r})") from None
        finally:
            # Frees their slots of MAX_PENDING; a PubAck arriving later is ignored.
            for future in futures:
                future.cancel()
        self._latency.observe(time.perf_counter() - started)
