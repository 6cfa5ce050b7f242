"""The ASGI app: Segment's HTTP Tracking API, health and metrics.

``POST /v1/{track,identify,page,screen,group,alias}`` take one message, ``/v1/batch`` (and
``/v1/import``) a ``{"batch": [...]}``. The write key comes as HTTP Basic user name or as
``writeKey`` in the body (a read key is refused); bodies may be gzip. Every message a request
carries is appended to the write key's source's landing segment before the answer;
``{"success": true}`` says how many of them the loader will accept and which it will
quarantine. With ``SLUICE_STREAM_NATS_URL`` set, every one is also published to the real-time
tier's JetStream stream, acknowledged, before the answer (``ingestion/api/publish.py``). Reads
no environment: the settings come in through ``IngestApi``.

The same app serves the read side, ``serving/query_api.py`` (reports, ad-hoc SQL on the
serving snapshot, the dashboard) for read keys; the server (``sluice/server.py``) mounts both
and ``/metrics``, which renders the registry that both APIs count in.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import time
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Gauge
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from common.http import BadCredentials, MalformedBody, authorization_key, parse_json
from common.keys import KeyFileError, KeyStore
from common.metrics import IngestMetrics
from common.settings import Settings
from common.stream import StreamUnavailable
from ingestion.api.messages import StampedBatch, TimestampParser, dumps, stamp_batch
from ingestion.api.publish import Publisher, PublishFailed
from ingestion.api.ratelimit import RateLimiter
from ingestion.api.segments import GroupCommitter, SegmentWriter, lock_landing, recover

MAX_MESSAGE_BYTES = 32 * 1024
MAX_REQUEST_BYTES = 500 * 1024
MAX_BATCH_MESSAGES = 2500
MAX_ERRORS_LISTED = 100
SINGLE_TYPES = ("track", "identify", "page", "screen", "group", "alias")
BATCH_PATHS = ("batch", "import")

access_log = logging.getLogger("sluice.api.access")
log = logging.getLogger("sluice.api")


class HttpError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def _json(
    body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(dumps(body), status, headers, media_type="application/json")


def _basic_auth_key(header: str) -> str:
    try:
        scheme, key = authorization_key(header)
    except BadCredentials as error:
        raise HttpError(401, str(error)) from None
    if scheme != "basic":
        raise HttpError(401, "Authorization must be Basic with the write key as user name")
    return key


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_REQUEST_BYTES:
        raise HttpError(413, f"request body is {declared} bytes; the limit is 500 KB per request")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_REQUEST_BYTES:
            raise HttpError(413, "request body is over the limit of 500 KB per request")
        chunks.append(chunk)
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding != "gzip":
        raise HttpError(415, f"Content-Encoding {encoding!r} is not supported; use gzip or none")
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        data = inflater.decompress(body, MAX_REQUEST_BYTES + 1)
    except zlib.error as error:
        raise HttpError(400, f"body is not valid gzip ({error})") from None
    if len(data) > MAX_REQUEST_BYTES:
        raise HttpError(413, "decompressed body is over the limit of 500 KB per request")
    if not inflater.eof:
        raise HttpError(400, "body is not valid gzip (truncated stream)")
    return data


def parse_body(body: bytes) -> dict[str, Any]:
    """A request's JSON object; text that is not valid Unicode is read as the loader reads it
    (``common.http.parse_json``), so such a message is stamped, answered and loaded like any
    other."""
    try:
        doc = parse_json(body)
    except MalformedBody as error:
        raise HttpError(400, str(error)) from None
    if not isinstance(doc, dict):
        raise HttpError(400, "malformed request: the body must be a JSON object")
    return doc


class IngestApi:
    """The routes and the state they share: keys, limits, the committer and metrics (in
    ``registry``, the server's; a registry of its own when none is given)."""

    def __init__(self, settings: Settings, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.keys = KeyStore(settings.api_keys_path)
        self.limiter = RateLimiter(settings.api_rate, settings.api_burst)
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = IngestMetrics(self.registry)
        self.timestamps = TimestampParser()
        self.writer = SegmentWriter(
            settings.api_sources_dir, settings.api_segment_bytes, settings.api_segment_seconds
        )
        self.committer: GroupCommitter | None = None
        # NATS JetStream mode of the real-time tier; None in tail mode.
        self.publisher = Publisher(settings, self.registry) if settings.stream_nats_url else None
        self._lock_fd: int | None = None
        # Read when /metrics is asked, off the event loop.
        Gauge(
            "sluice_api_segments_open", "Landing segments being written.", registry=self.registry
        ).set_function(lambda: self.writer.open_segments)
        Gauge(
            "sluice_api_segments_waiting",
            "Closed landing segments of the API that the load has not picked up yet.",
            registry=self.registry,
        ).set_function(self.segments_waiting)

    def open(self) -> list[Path]:
        """Take the landing lock and close segments a crashed server left open."""
        if self._lock_fd is None:
            self._lock_fd = lock_landing(self.settings.api_sources_dir)
            recovered = recover(self.settings.api_sources_dir)
            if recovered:
                log.warning("closed %d segments left open by a stopped server", len(recovered))
            return recovered
        return []

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        self.open()
        self.committer = GroupCommitter(self.writer, self.metrics.fsync_latency.observe)
        await self.committer.start()
        try:
            if self.publisher is not None:
                try:
                    await self.publisher.start()
                except StreamUnavailable as error:
                    log.error("%s", error)
                    raise
            yield
        finally:
            if self.publisher is not None:
                await self.publisher.close()
            await self.committer.stop()
            self.release()

    async def ingest(self, request: Request) -> Response:
        started = time.perf_counter()
        kind = request.path_params["kind"]
        # Unknown paths share one label, so clients cannot grow the metrics without bound.
        path = f"/v1/{kind}" if kind in SINGLE_TYPES or kind in BATCH_PATHS else "/v1/other"
        fields: dict[str, Any] = {}
        try:
            response = await self._ingest(request, kind, fields)
        except HttpError as error:
            response = _json(
                {"success": False, "error": error.message}, error.status, error.headers
            )
        elapsed = time.perf_counter() - started
        self.metrics.request_latency.observe(elapsed)
        self.metrics.response(path, response.status_code).inc()
        if access_log.isEnabledFor(logging.INFO):
            client = request.client.host if request.client else None
            entry = {"method": request.method, "path": path, "status": response.status_code}
            entry |= {"ms": round(elapsed * 1000, 2), "client": client, **fields}
            access_log.info("%s", dumps(entry).decode())
        return response

    async def _ingest(self, request: Request, kind: str, fields: dict[str, Any]) -> Response:
        if kind not in SINGLE_TYPES and kind not in BATCH_PATHS:
            raise HttpError(404, f"no endpoint /v1/{kind}; see docs/ingest-api.md")
        header = request.headers.get("authorization")
        key = _basic_auth_key(header) if header else None
        body = await _read_body(request)
        fields["bytes"] = len(body)
        self.metrics.bytes_in.inc(len(body))
        if kind in SINGLE_TYPES and len(body) > MAX_MESSAGE_BYTES:
            raise HttpError(413, f"message is {len(body)} bytes; the limit is 32 KB per message")
        source, (lines, ids, rejected) = self._stamp(body, key, kind, fields)
        wait = self.limiter.retry_after(source, len(ids))
        if wait:
            self.metrics.rate_limited.labels(source).inc()
            raise HttpError(
                429,
                f"rate limit of {self.settings.api_rate} messages/s for write key {source!r} "
                f"(SLUICE_API_RATE) exceeded; retry after {wait} s",
                {"Retry-After": str(wait)},
            )
        if lines:
            assert self.committer is not None
            try:
                await self.committer.append(source, lines)
            except OSError as error:
                log.error("could not append to landing: %s", error)
                raise HttpError(
                    503, f"could not write to the landing area ({error.strerror})"
                ) from None
            if self.publisher is not None:
                try:
                    await self.publisher.publish(source, lines[::2], ids)
                except PublishFailed as error:
                    log.error("%s", error)
                    # Landed but not in the stream: the client's retry puts it in both, and
                    # each tier counts its messageId once.
                    raise HttpError(
                        503, "could not publish to the real-time stream (NATS); retry"
                    ) from None
        accepted = len(ids) - len(rejected)
        self.metrics.source_accepted(source).inc(accepted)
        for _, reason in rejected:
            self.metrics.reject(reason)
        fields |= {"accepted": accepted, "rejected": len(rejected)}
        answer: dict[str, Any] = {"success": True, "accepted": accepted, "rejected": len(rejected)}
        if rejected:
            answer["errors"] = [
                {"index": index, "reason": reason} for index, reason in rejected[:MAX_ERRORS_LISTED]
            ]
        return _json(answer)

    def _stamp(
        self, body: bytes, key: str | None, kind: str, fields: dict[str, Any]
    ) -> tuple[str, StampedBatch]:
        """The write key's source and the request's stamped messages.

        The parsed body lives only while this runs: a request then waits for its group's
        fsync holding only its lines, so the collector does not find a hundred objects per
        waiting request to carry into its older generations (and its full passes)."""
        doc = parse_body(body)
        if not key:
            body_key = doc.get("writeKey")
            key = body_key if isinstance(body_key, str) else None
        if not key:
            raise HttpError(401, "no write key: send it as Basic auth user name or as writeKey")
        try:
            source = self.keys.source_of(key)
        except KeyFileError as error:
            log.error("%s", error)
            raise HttpError(503, "the key file cannot be read; see the server log") from None
        if source is None:
            if self.keys.reader_of(key) is not None:
                raise HttpError(
                    403, "this is a read key, which cannot send events; use a write key"
                )
            raise HttpError(401, "unknown or revoked write key")
        fields["source"] = source
        if kind in SINGLE_TYPES:
            stamped = stamp_batch([doc], dt.datetime.now(dt.UTC), self.timestamps, kind=kind)
        else:
            batch = doc.get("batch")
            if not isinstance(batch, list):
                raise HttpError(400, 'malformed request: "batch" must be a list of messages')
            if len(batch) > MAX_BATCH_MESSAGES:
                raise HttpError(
                    400, f"batch has {len(batch)} messages; the limit is 2500 per batch"
                )
            stamped = stamp_batch(
                batch,
                dt.datetime.now(dt.UTC),
                self.timestamps,
                batch_sent_at=doc.get("sentAt"),
                batch_context=doc.get("context"),
            )
        lines = stamped.lines
        if max(map(len, lines), default=0) > MAX_MESSAGE_BYTES:
            index = next(i for i, line in enumerate(lines[::2]) if len(line) > MAX_MESSAGE_BYTES)
            raise HttpError(
                413,
                f"message {index} is {len(lines[2 * index])} bytes; the limit is 32 KB per message",
            )
        return source, stamped

    def routes(self) -> list[Route]:
        """The ingest routes; ``/v1/{kind}`` takes any path under /v1, so a server mounts
        other /v1 routes before these."""
        return [
            Route("/v1/{kind}", self.ingest, methods=["POST"]),
            Route("/healthz", self.healthz, methods=["GET"]),
        ]

    async def healthz(self, _request: Request) -> Response:
        return _json({"status": "ok"})

    def segments_waiting(self) -> int:
        """Closed API segments not yet in the load's dlt state (read, never the warehouse)."""
        from ingestion.landing.helpers import new_landing_files
        from ingestion.pipeline import pipeline_name

        settings = self.settings
        sources = settings.api_sources_dir.relative_to(settings.landing_dir).as_posix() + "/"
        waiting = new_landing_files(settings.landing_dir, settings.dlt_dir, pipeline_name(settings))
        return sum(name.startswith(sources) for name in waiting)
