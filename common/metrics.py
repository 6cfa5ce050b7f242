"""Metrics of ``sluice serve`` on ``prometheus_client``: the shared buckets and the ingest
API's counters and histograms.

The server (``sluice/server.py``) makes one ``CollectorRegistry`` per app and hands it to
each API, which registers its metrics there; ``/metrics`` renders that registry with
``generate_latest`` in Prometheus' text format 0.0.4. Figures that only make sense when asked
(segments waiting for the load, the snapshot's age) are gauges whose value is read at scrape
time (``Gauge.set_function``) or custom collectors. Rejection reasons are labelled with quoted
values replaced by ``"..."`` (as the load report groups them), so a label never carries
payload text. Reads no environment.
"""

from __future__ import annotations

import functools
import re

from prometheus_client import CollectorRegistry, Counter, Histogram

_QUOTED = re.compile(r'"[^"]*"')

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
FSYNC_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)


def reason_label(reason: str) -> str:
    text = _QUOTED.sub('"..."', reason)
    return text[:200]


class IngestMetrics:
    """The ingest API's counters and histograms, registered in ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.accepted = Counter(
            "sluice_api_messages_accepted",
            "Messages appended to landing that meet the event contract, by source.",
            ["source"],
            registry=registry,
        )
        self.rejected = Counter(
            "sluice_api_messages_rejected",
            "Messages appended to landing for quarantine (raw.rejected_events), by reason.",
            ["reason"],
            registry=registry,
        )
        self.rate_limited = Counter(
            "sluice_api_requests_rate_limited",
            "Requests answered 429 because the write key's token bucket was empty, by source.",
            ["source"],
            registry=registry,
        )
        self.responses = Counter(
            "sluice_api_responses",
            "Responses by path and status code.",
            ["path", "status"],
            registry=registry,
        )
        self.bytes_in = Counter(
            "sluice_api_request_bytes", "Request body bytes received.", registry=registry
        )
        self.request_latency = Histogram(
            "sluice_api_request_duration_seconds",
            "Time from request to response.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.fsync_latency = Histogram(
            "sluice_api_fsync_duration_seconds",
            "Time to write and fsync one commit group.",
            buckets=FSYNC_BUCKETS,
            registry=registry,
        )
        # labels() takes a lock and builds its key on every call; every request counts an
        # answer and its source's messages, so it keeps those children (one per label value).
        self.response = functools.cache(self.responses.labels)
        self.source_accepted = functools.cache(self.accepted.labels)

    def reject(self, reason: str) -> None:
        self.rejected.labels(reason_label(reason)).inc()
