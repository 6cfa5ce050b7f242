"""NATS JetStream mode's source of the stream worker: pull the messages the ingest API
published (``common.stream``) through a durable consumer, and ack them once committed.

Every ``sluice stream`` of the team binds to one durable pull consumer
(``SLUICE_STREAM_NATS_CONSUMER``), so JetStream hands each message to one of them: several
workers split the stream. Acks are explicit and sent only after the SQLite transaction that
holds the batch has committed. A worker killed before that leaves its messages unacked, and
JetStream delivers them again after ``ACK_WAIT_SECONDS`` (to any worker); a worker killed
after the commit but before the acks has them delivered again too, and the store's dedup
horizon (``seen_messages``, written in the same transaction) counts each messageId once.
The consumer is created, or its configuration updated, when a worker starts; it starts at
the stream's first message, and its position lives in JetStream, not in the store.

nats-py is asyncio; the worker is not. The source keeps an event loop of its own and runs it
for each fetch and each round of acks. Reads no environment: the settings come in.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from common import stream
from common.settings import Settings
from realtime.source import Batch

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.js import JetStreamContext

# Messages per batch (one SQLite transaction), and how long a fetch waits for the first one.
FETCH_MESSAGES = 5000
FETCH_WAIT_SECONDS = 1.0
# A message not acked this long after its delivery is delivered again: far longer than a
# batch takes to fold and commit.
ACK_WAIT_SECONDS = 10.0
# How long acks may take to reach the server (a whole number: nats-py's type).
FLUSH_TIMEOUT_SECONDS = 5
# Messages delivered and not yet acked, across all the workers of the consumer.
MAX_ACK_PENDING = 8 * FETCH_MESSAGES


class JetStreamSource:
    """Batches of messages from the durable consumer; ``committed`` acks them."""

    idle_seconds = 0.0  # a fetch waits up to FETCH_WAIT_SECONDS for messages itself

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.description = (
            f"JetStream stream {settings.stream_nats_stream!r} at {settings.stream_nats_url} "
            f"(durable consumer {settings.stream_nats_consumer!r})"
        )
        self._loop = asyncio.new_event_loop()
        try:
            self._nc, self._subscription = self._loop.run_until_complete(self._subscribe())
        except BaseException:
            self._loop.close()
            raise

    async def _subscribe(self) -> tuple[Client, JetStreamContext.PullSubscription]:
        from nats.errors import Error
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        settings = self.settings
        nc = await stream.connect(settings, "sluice stream")
        try:
            js = nc.jetstream()
            # The API creates the stream too; whichever starts first makes it.
            await stream.ensure_stream(js, settings)
            config = ConsumerConfig(
                durable_name=settings.stream_nats_consumer,
                deliver_policy=DeliverPolicy.ALL,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=ACK_WAIT_SECONDS,
                max_deliver=-1,
                max_ack_pending=MAX_ACK_PENDING,
                filter_subject=stream.all_subjects(settings.stream_nats_stream),
            )
            try:
                await js.add_consumer(settings.stream_nats_stream, config)
                subscription = await js.pull_subscribe_bind(
                    durable=settings.stream_nats_consumer, stream=settings.stream_nats_stream
                )
            except (Error, TimeoutError) as error:
                raise stream.StreamUnavailable(
                    f"cannot set up the durable consumer {settings.stream_nats_consumer!r} "
                    f"(SLUICE_STREAM_NATS_CONSUMER) of the stream "
                    f"{settings.stream_nats_stream!r} at {stream.URL_SETTING}="
                    f"{settings.stream_nats_url!r}: {error!r}"
                ) from None
        except BaseException:
            await nc.close()
            raise
        return nc, subscription

    def read(self) -> Batch | None:
        messages = self._loop.run_until_complete(self._fetch())
        if not messages:
            return None
        return Batch(
            blocks=[b"\n".join(message.data for message in messages) + b"\n"],
            origin="the stream",
            receipt=messages,
        )

    async def _fetch(self) -> list[Msg]:
        from nats.errors import Error

        try:
            return await self._subscription.fetch(FETCH_MESSAGES, timeout=FETCH_WAIT_SECONDS)
        except TimeoutError:
            return []  # nothing new
        except Error:
            # NATS is away, and the client reconnects on its own meanwhile: wait as a fetch
            # would, rather than ask again at once.
            await asyncio.sleep(FETCH_WAIT_SECONDS)
            return []

    def committed(self, batch: Batch) -> None:
        self._loop.run_until_complete(self._ack(batch.receipt))

    async def _ack(self, messages: list[Msg]) -> None:
        from nats.errors import Error

        # An ack that does not reach JetStream only means a redelivery, which the dedup
        # horizon counts as a duplicate.
        with contextlib.suppress(Error, TimeoutError):
            for message in messages:
                await message.ack()
            await self._nc.flush(timeout=FLUSH_TIMEOUT_SECONDS)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._loop.run_until_complete(self._nc.close())
        self._loop.close()
