"""The one HTTP server of ``sluice serve``: the ingest routes (``ingestion.api``), the query
routes and the dashboard (``serving.query_api``) and ``/metrics`` in one Starlette app, run
with uvicorn (uvloop, httptools).

The two stages never import each other; this module, above both, mounts them side by side.
Access logs are JSON lines on stderr (method, path, status, time, bytes, source and message
counts; never a key or a payload). Settings come in as a ``Settings``.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import sys
from collections.abc import AsyncIterator

import uvicorn
from starlette.applications import Starlette

from common.settings import Settings
from ingestion.api.app import IngestApi
from serving.query_api import QueryApi


def create_app(
    settings: Settings, api: IngestApi | None = None, query_api: QueryApi | None = None
) -> Starlette:
    """The app: query routes first (``/v1/{kind}`` would take ``POST /v1/query`` for an
    event type), then the ingest routes; one lifespan opens and closes both."""
    api = api or IngestApi(settings)
    query_api = query_api or QueryApi(settings, api.keys)
    api.extra_metrics.append(query_api.render_metrics)
    routes = [*query_api.routes(), *api.routes()]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with api.lifespan(app):
            try:
                yield
            finally:
                # The snapshot connection, the query workers and the quota file.
                query_api.close()

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.api = api
    app.state.query_api = query_api
    return app


def configure_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access = logging.getLogger("sluice.api.access")
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    access.propagate = False
    api = logging.getLogger("sluice.api")
    api.addHandler(logging.StreamHandler(sys.stderr))
    api.setLevel(logging.INFO)


def serve(settings: Settings, host: str, port: int, access_logs: bool = True) -> None:
    """Serve until stopped; raises LandingLocked when another server owns the landing area."""
    if access_logs:
        configure_logging()
    api = IngestApi(settings)
    api.open()
    # Everything loaded so far lives as long as the process: keep it out of the collector's
    # full passes, which otherwise add their pauses to the latency tail.
    gc.freeze()
    try:
        uvicorn.run(
            create_app(settings, api),
            host=host,
            port=port,
            loop="uvloop",
            http="httptools",
            access_log=False,
            log_level="warning",
            lifespan="on",
        )
    finally:
        api.release()
