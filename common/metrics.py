"""The ingest API's counters and histograms, rendered in Prometheus' text format.

Rejection reasons are labelled with quoted values replaced by ``"..."`` (as the load report
groups them), so a label never carries payload text. Reads no environment.
"""

from __future__ import annotations

import bisect
import re
from collections import Counter
from dataclasses import dataclass, field

_QUOTED = re.compile(r'"[^"]*"')

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
FSYNC_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)


def reason_label(reason: str) -> str:
    text = _QUOTED.sub('"..."', reason)
    return text[:200]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


@dataclass
class Histogram:
    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.buckets)

    def observe(self, value: float) -> None:
        index = bisect.bisect_left(self.buckets, value)
        if index < len(self.counts):
            self.counts[index] += 1
        self.total += value
        self.count += 1

    def render(self, name: str, help_text: str) -> list[str]:
        lines = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
        cumulative = 0
        for bound, count in zip(self.buckets, self.counts, strict=True):
            cumulative += count
            lines.append(f'{name}_bucket{{le="{bound}"}} {cumulative}')
        lines.append(f'{name}_bucket{{le="+Inf"}} {self.count}')
        lines.append(f"{name}_sum {self.total}")
        lines.append(f"{name}_count {self.count}")
        return lines


@dataclass
class Metrics:
    accepted: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    rate_limited: Counter[str] = field(default_factory=Counter)
    responses: Counter[tuple[str, int]] = field(default_factory=Counter)
    bytes_in: int = 0
    request_latency: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS))
    fsync_latency: Histogram = field(default_factory=lambda: Histogram(FSYNC_BUCKETS))

    def reject(self, reason: str) -> None:
        self.rejected[reason_label(reason)] += 1

    def render(self, segments_open: int, segments_waiting: int) -> str:
        lines: list[str] = []

        def counter(name: str, help_text: str, rows: list[tuple[str, float]]) -> None:
            lines.extend([f"# HELP {name} {help_text}", f"# TYPE {name} counter"])
            lines.extend(f"{name}{labels} {value}" for labels, value in rows)

        def gauge(name: str, help_text: str, value: float) -> None:
            lines.extend([f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {value}"])

        counter(
            "sluice_api_messages_accepted_total",
            "Messages appended to landing that meet the event contract, by source.",
            [(f'{{source="{_escape(k)}"}}', v) for k, v in sorted(self.accepted.items())],
        )
        counter(
            "sluice_api_messages_rejected_total",
            "Messages appended to landing for quarantine (raw.rejected_events), by reason.",
            [(f'{{reason="{_escape(k)}"}}', v) for k, v in sorted(self.rejected.items())],
        )
        counter(
            "sluice_api_requests_rate_limited_total",
            "Requests answered 429 because the write key's token bucket was empty, by source.",
            [(f'{{source="{_escape(k)}"}}', v) for k, v in sorted(self.rate_limited.items())],
        )
        counter(
            "sluice_api_responses_total",
            "Responses by path and status code.",
            [
                (f'{{path="{_escape(path)}",status="{status}"}}', v)
                for (path, status), v in sorted(self.responses.items())
            ],
        )
        counter("sluice_api_request_bytes_total", "Request body bytes received.", [])
        lines.append(f"sluice_api_request_bytes_total {self.bytes_in}")
        lines.extend(
            self.request_latency.render(
                "sluice_api_request_duration_seconds", "Time from request to response."
            )
        )
        lines.extend(
            self.fsync_latency.render(
                "sluice_api_fsync_duration_seconds", "Time to write and fsync one commit group."
            )
        )
        gauge("sluice_api_segments_open", "Landing segments being written.", segments_open)
        gauge(
            "sluice_api_segments_waiting",
            "Closed landing segments of the API that the load has not picked up yet.",
            segments_waiting,
        )
        return "\n".join(lines) + "\n"
