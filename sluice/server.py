"""The one HTTP server of ``sluice serve``: the ingest routes (``ingestion.api``), the query
routes and the dashboard (``serving.query_api``), the live figures (``realtime.api``), the
daily view over both tiers (``sluice.daily``), ``GET /v1/monitoring`` and ``/metrics``
(with the SLOs of ``sluice.slo``, whose per-minute counts it records, and the Dagster
instance's runs and freshness and the data directory's sizes of ``sluice.monitoring``) in
one Starlette app, run with
uvicorn (uvloop, httptools).

The stages never import each other; this module, above them, mounts them side by side
and gives both one ``prometheus_client`` registry, which ``/metrics`` renders.
Access logs are JSON lines on stderr (method, path, status, time, bytes, source and message
counts; never a key or a payload). Settings come in as a ``Settings``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import sys
from collections.abc import AsyncIterator

import prometheus_client
import uvicorn
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from common.settings import Settings
from ingestion.api.app import IngestApi
from realtime.api import LiveApi
from serving.query_api import QueryApi
from sluice.daily import DailyApi
from sluice.monitoring import MonitoringApi
from sluice.slo import SloCollector, SloRecorder, load_slos


def create_app(settings: Settings) -> Starlette:
    """The app: live and query routes first (``/v1/{kind}`` would take ``/v1/live`` and
    ``POST /v1/query`` for event types), then the ingest routes and ``/metrics``; one
    lifespan opens and closes the ingest and query APIs."""
    # /metrics keeps the series it has always had: no `_created` beside each counter.
    prometheus_client.disable_created_metrics()
    registry = CollectorRegistry()
    api = IngestApi(settings, registry)
    query_api = QueryApi(settings, api.keys, registry=registry)
    live_api = LiveApi(settings, api.keys, registry=registry)
    daily_api = DailyApi(settings, api.keys, query_api)
    # The Dagster instance's runs and freshness, storage, the dashboard's load time.
    monitoring_api = MonitoringApi(settings, api.keys, registry)
    # The SLOs' per-minute counts (sluice slo) and the sluice_slo_* gauges.
    slos = load_slos()
    recorder = SloRecorder(
        settings,
        slos,
        api_responses=api.metrics.responses,
        api_latency=api.metrics.request_latency,
        query_latency=query_api.metrics.latency,
    )
    slo_collector = SloCollector(settings, slos, before=recorder.flush)
    registry.register(slo_collector)

    async def metrics(_request: Request) -> Response:
        # Some figures read files when asked (the load's dlt state, the snapshot's version).
        text = await asyncio.to_thread(generate_latest, registry)
        return Response(text, media_type=CONTENT_TYPE_PLAIN_0_0_4)

    routes = [
        *live_api.routes(),
        *daily_api.routes(),
        *monitoring_api.routes(),
        *query_api.routes(),
        *api.routes(),
        Route("/metrics", metrics, methods=["GET"]),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with (
            api.lifespan(app),
            recorder.running(warm=slo_collector.warm),
            monitoring_api.warming(),
        ):
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
    # The Dagster instance's configuration names its home by DAGSTER_HOME: /metrics reads it.
    os.environ.update(settings.subprocess_env())
    app = create_app(settings)
    api: IngestApi = app.state.api
    api.open()
    # Everything loaded so far lives as long as the process: keep it out of the collector's
    # full passes, which otherwise add their pauses to the latency tail.
    gc.freeze()
    # A batch of 100 events parses into about 500 dicts and lists that die with the request;
    # at the default threshold (700) the young generation was collected about once a request.
    # Every 20,000 allocations instead: the same garbage, collected in fewer, larger passes.
    gc.set_threshold(20_000, 10, 10)
    try:
        uvicorn.run(
            app,
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
