"""Run the ingest API with uvicorn (uvloop, httptools): what ``sluice serve`` does.

Access logs are JSON lines on stderr (method, path, status, time, bytes, source and message
counts; never a key or a payload). Settings come from ``sluice.settings``.
"""

from __future__ import annotations

import gc
import logging
import sys

import uvicorn

from ingestion.api.app import IngestApi, create_app
from sluice.settings import Settings


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
