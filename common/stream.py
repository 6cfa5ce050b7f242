"""The NATS JetStream stream of the real-time tier's team mode, as both of its sides see it:
the ingest API publishes each message it acknowledged (``ingestion/api/publish.py``) and
``sluice stream`` consumes them (``realtime/jetstream.py``). Each name is defined here once.

- The stream (``SLUICE_STREAM_NATS_STREAM``) keeps the messages on file storage for
  ``SLUICE_STREAM_NATS_MAX_AGE_HOURS`` and takes the subjects ``<stream>.<source>``.
- One stream message per message the API landed: the payload is its landing line (the
  stamped JSON, without the newline), byte for byte what the landing segment holds.
- ``Nats-Msg-Id`` is the messageId of each message the API found valid, so JetStream drops
  an SDK's retry that comes within ``DUPLICATE_WINDOW_SECONDS``; the worker's dedup horizon
  catches the later ones. Invalid messages carry no id: they count under their rule each time,
  as in the landing files.

nats-py (the ``nats`` extra) is imported only when a function here runs, so tail mode needs
nothing of it. Reads no environment: the settings come in.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from common.settings import Settings

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.js import JetStreamContext

MSG_ID_HEADER = "Nats-Msg-Id"
# JetStream's own dedup by Nats-Msg-Id: SDKs retry within seconds to minutes.
DUPLICATE_WINDOW_SECONDS = 600
CONNECT_TIMEOUT_SECONDS = 2
URL_SETTING = "SLUICE_STREAM_NATS_URL"

log = logging.getLogger("sluice.stream")


class StreamUnavailable(RuntimeError):
    """NATS cannot be reached, or the stream cannot be set up; the message names the setting."""


def subject(stream: str, source: str) -> str:
    """The subject of a write key's source's messages."""
    return f"{stream}.{source}"


def all_subjects(stream: str) -> str:
    """The subjects the stream takes: every source's."""
    return f"{stream}.>"


def servers(settings: Settings) -> list[str]:
    return [url.strip() for url in settings.stream_nats_url.split(",") if url.strip()]


async def connect(settings: Settings, name: str) -> Client:
    """A connection to ``SLUICE_STREAM_NATS_URL`` that reconnects on its own once made; raises
    ``StreamUnavailable`` when no server answers within ``CONNECT_TIMEOUT_SECONDS``."""
    try:
        import nats
    except ImportError:
        raise StreamUnavailable(
            f"{URL_SETTING} is set, but nats-py is not installed: pip install 'sluice[nats]'"
        ) from None
    errors: list[Exception] = []
    connected = False

    async def on_error(error: Exception) -> None:
        # Said once, not at every reconnect attempt.
        if connected and (not errors or str(error) != str(errors[-1])):
            log.warning("NATS (%s): %s", URL_SETTING, error)
        errors.append(error)
        del errors[:-1]

    async def on_disconnected() -> None:
        log.warning("NATS (%s): disconnected; reconnecting", URL_SETTING)

    async def on_reconnected() -> None:
        errors.clear()
        log.warning("NATS (%s): reconnected", URL_SETTING)

    try:
        # Reconnects forever, through a server's restart: the callers' own timeouts decide
        # when a request fails. Only the first connection is bounded in time.
        nc = await asyncio.wait_for(
            nats.connect(
                servers(settings),
                name=name,
                connect_timeout=CONNECT_TIMEOUT_SECONDS,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                error_cb=on_error,
                disconnected_cb=on_disconnected,
                reconnected_cb=on_reconnected,
            ),
            CONNECT_TIMEOUT_SECONDS * 2,
        )
    except Exception as error:
        reason = errors[-1] if errors else error
        raise StreamUnavailable(
            f"cannot connect to NATS at {URL_SETTING}={settings.stream_nats_url!r} "
            f"({reason}); start nats-server with JetStream (nats-server -js), or unset "
            f"{URL_SETTING} for tail mode"
        ) from None
    connected = True
    return nc


async def ensure_stream(js: JetStreamContext, settings: Settings) -> None:
    """Create the stream, or bring its configuration to the settings'."""
    from nats.errors import Error
    from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
    from nats.js.errors import BadRequestError

    max_age = settings.stream_nats_max_age_hours * 3600
    config = StreamConfig(
        name=settings.stream_nats_stream,
        subjects=[all_subjects(settings.stream_nats_stream)],
        storage=StorageType.FILE,
        retention=RetentionPolicy.LIMITS,
        discard=DiscardPolicy.OLD,
        max_age=max_age,
        duplicate_window=min(DUPLICATE_WINDOW_SECONDS, max_age),
    )
    try:
        try:
            await js.add_stream(config)
        except BadRequestError:
            # It exists with another configuration (another retention, say): update it.
            await js.update_stream(config)
    except (Error, TimeoutError) as error:
        raise StreamUnavailable(
            f"cannot set up the JetStream stream {settings.stream_nats_stream!r} "
            f"(SLUICE_STREAM_NATS_STREAM) on {URL_SETTING}={settings.stream_nats_url!r}: "
            f"{error}; is JetStream enabled (nats-server -js)?"
        ) from None
