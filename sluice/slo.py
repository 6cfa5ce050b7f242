"""Sluice's service level objectives (``ops/slos.yml``), measured from what Sluice records
itself, so a laptop without Prometheus gets them too.

Every SLO is the share of good events over a rolling window (``window_days``), and its error
budget is ``1 - objective`` of the window's events. Each SLI has one source:

- ``ingest_availability``, ``ingest_ack_latency``, ``query_latency``: the ingest and query
  API's own ``prometheus_client`` counters and histograms, copied by ``SloRecorder`` inside
  ``sluice serve`` every few seconds into per-minute counts (total, good) in a small SQLite
  file (``Settings.slo_counts_path``), kept for the window and a day. A good event is a
  response under 500, or a request answered within the threshold (a bucket bound of the
  histogram, so the count is exact).
- ``batch_freshness``: the Dagster instance. A minute is good when the day before its UTC
  day (counted from the marts' freshness deadline, 03:00 UTC, on) has every daily mart
  partition materialized by then; minutes are counted from the first mart partition built.
- ``realtime_lag``: the real-time store's lag histogram per minute (``realtime.read``), so
  its window is at most the store's retention (``SLUICE_REALTIME_RETENTION_DAYS``).

``sluice slo`` prints each SLO (objective, SLI over the window, budget left, burn rate over
the last hour and 6 hours); ``SloCollector`` exports the same on ``/metrics`` as
``sluice_slo_*`` gauges, and ``python -m sluice.slo --prometheus-rules`` prints the
Prometheus recording and alerting rules of the same file (``ops/prometheus/rules.yml``: the
multi-window, multi-burn-rate alerts of Google's SRE workbook), so the objectives and
thresholds are written once.

Hand-written over sqlite3 rather than a time-series store: the figures are five pairs of
counts per minute. Reads ``SLUICE_DATA_DIR`` (through ``Settings``) and nothing else.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import functools
import logging
import math
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from common.metrics import LATENCY_BUCKETS
from common.settings import SLO_FILE, Settings
from realtime import read, store
from serving.query_api import QUERY_BUCKETS

# The SLIs Sluice measures: name -> (what counts, the histogram's bucket bounds or None).
INGEST_AVAILABILITY = "ingest_availability"
INGEST_ACK_LATENCY = "ingest_ack_latency"
BATCH_FRESHNESS = "batch_freshness"
QUERY_LATENCY = "query_latency"
REALTIME_LAG = "realtime_lag"
_BUCKETS: dict[str, tuple[float, ...] | None] = {
    INGEST_AVAILABILITY: None,
    INGEST_ACK_LATENCY: LATENCY_BUCKETS,
    BATCH_FRESHNESS: None,
    QUERY_LATENCY: QUERY_BUCKETS,
    REALTIME_LAG: store.LAG_BUCKETS,
}
# The series that Prometheus computes each SLI's error ratio from.
_HISTOGRAMS = {
    INGEST_ACK_LATENCY: "sluice_api_request_duration_seconds",
    QUERY_LATENCY: "sluice_query_duration_seconds",
    REALTIME_LAG: "sluice_realtime_lag_seconds",
}
# SLIs counted by SloRecorder in sluice serve (the others are read from where they persist).
RECORDED = (INGEST_AVAILABILITY, INGEST_ACK_LATENCY, QUERY_LATENCY)

# Burn-rate windows that `sluice slo` and /metrics show.
BURN_WINDOWS = (("1h", dt.timedelta(hours=1)), ("6h", dt.timedelta(hours=6)))
# The SRE workbook's multi-window, multi-burn-rate alerts: (severity, long window, short
# window, burn rate). A burn rate of 14.4 spends 2% of a 30-day budget in an hour.
BURN_ALERTS = (
    ("page", "1h", "5m", 14.4),
    ("page", "6h", "30m", 6.0),
    ("ticket", "1d", "2h", 3.0),
    ("ticket", "3d", "6h", 1.0),
)
# Alert names: Sluice<Slo>BudgetBurn pages, Sluice<Slo>BudgetDrain makes a ticket.
ALERT_SUFFIX = {"page": "Burn", "ticket": "Drain"}
RULE_WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
RUNBOOK = "docs/operations.md#slos-and-alerts"

RECORD_SECONDS = 10.0
# /metrics is scraped every few seconds; the freshness SLI reads the Dagster event log.
COLLECT_CACHE_SECONDS = 30.0
MINUTE = 60

log = logging.getLogger("sluice.api")


class SloFileError(ValueError):
    """``ops/slos.yml`` (or another SLO file) cannot be used; the message names the file,
    the line and the field."""


@dataclass(frozen=True)
class Slo:
    name: str
    tier: str
    description: str
    objective: float
    threshold_seconds: float | None = None

    @property
    def budget(self) -> float:
        """The share of the window's events that may be bad."""
        return 1.0 - self.objective


@dataclass(frozen=True)
class SloFile:
    window: dt.timedelta
    slos: tuple[Slo, ...]

    def get(self, name: str) -> Slo | None:
        return next((slo for slo in self.slos if slo.name == name), None)


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def load_slos(path: Path = SLO_FILE) -> SloFile:
    """The SLO file, checked: every error names the file, the line and the field."""
    try:
        root = yaml.compose(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise SloFileError(f"{path}: cannot read the SLO file: {error}") from None

    def fail(node: yaml.Node, message: str) -> SloFileError:
        return SloFileError(f"{path}, line {_line(node)}: {message}")

    if not isinstance(root, yaml.MappingNode):
        raise SloFileError(f"{path}: expected `window_days:` and `slos:` at the top")
    top = {key.value: value for key, value in root.value}
    unknown = set(top) - {"window_days", "slos"}
    if unknown:
        raise SloFileError(f"{path}: unknown top-level field(s) {sorted(unknown)}")
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    days = data.get("window_days")
    if not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= 90:
        node = top.get("window_days", root)
        raise fail(node, f"window_days must be a whole number of days from 1 to 90, not {days!r}")
    slos_node = top.get("slos")
    if not isinstance(slos_node, yaml.MappingNode) or not slos_node.value:
        raise fail(slos_node or root, "slos must map SLO names to their fields")
    slos = []
    for key_node, value_node in slos_node.value:
        name = key_node.value
        if name not in _BUCKETS:
            raise fail(key_node, f"unknown SLO {name!r}; Sluice measures {sorted(_BUCKETS)}")
        fields = data["slos"][name]
        if not isinstance(fields, dict):
            raise fail(value_node, f"SLO {name}: expected its fields (tier, objective, ...)")
        lines = {k.value: k for k, _ in value_node.value}
        allowed = {"tier", "description", "objective", "threshold_seconds"}
        for field in set(fields) - allowed:
            raise fail(lines[field], f"SLO {name}: unknown field {field!r}")
        objective = fields.get("objective")
        if not isinstance(objective, float) or not 0.0 < objective < 1.0:
            raise fail(
                lines.get("objective", key_node),
                f"SLO {name}: objective must be a share between 0 and 1 (0.999), not {objective!r}",
            )
        buckets = _BUCKETS[name]
        threshold = fields.get("threshold_seconds")
        if buckets is None and threshold is not None:
            raise fail(lines["threshold_seconds"], f"SLO {name} takes no threshold_seconds")
        if buckets is not None and (
            not isinstance(threshold, int | float) or float(threshold) not in buckets[:-1]
        ):
            bounds = ", ".join(f"{b:g}" for b in buckets if not math.isinf(b))
            raise fail(
                lines.get("threshold_seconds", key_node),
                f"SLO {name}: threshold_seconds must be one of its histogram's bucket bounds "
                f"({bounds}), not {threshold!r}",
            )
        for field in ("tier", "description"):
            if not isinstance(fields.get(field), str) or not fields[field].strip():
                raise fail(lines.get(field, key_node), f"SLO {name}: {field} must be text")
        slos.append(
            Slo(
                name=name,
                tier=fields["tier"],
                description=" ".join(fields["description"].split()),
                objective=objective,
                threshold_seconds=None if threshold is None else float(threshold),
            )
        )
    return SloFile(window=dt.timedelta(days=days), slos=tuple(slos))


# -- per-minute counts of the APIs, written by sluice serve ---------------------------------

_SCHEMA = """
create table if not exists minute_counts (
    minute_start integer not null,  -- UTC seconds, a multiple of 60
    slo text not null,
    total integer not null,
    good integer not null,
    primary key (minute_start, slo)
) without rowid;
"""


def _connect(path: Path, *, read_only: bool = False) -> sqlite3.Connection:
    if read_only:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(path, timeout=10, isolation_level=None)
        con.execute("pragma journal_mode = wal")
        con.execute("pragma synchronous = normal")
        con.executescript(_SCHEMA)
    return con


def _histogram_counts(histogram: Any, threshold: float) -> tuple[float, float]:
    """(observations, observations within ``threshold``) of a prometheus_client histogram."""
    total = good = 0.0
    for family in histogram.collect():
        for sample in family.samples:
            if sample.name.endswith("_count"):
                total += sample.value
            elif sample.name.endswith("_bucket") and float(sample.labels["le"]) == threshold:
                good += sample.value
    return total, good


def _response_counts(responses: Any) -> tuple[float, float]:
    """(responses, responses that are not server errors) of a counter labelled ``status``."""
    total = good = 0.0
    for family in responses.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                total += sample.value
                good += sample.value if int(sample.labels["status"]) < 500 else 0.0
    return total, good


class SloRecorder:
    """Copies the running totals of the API's metrics into per-minute counts: each flush adds
    what grew since the last one to the minute under way. A restarted server starts its
    counters at zero, and so does its recorder."""

    def __init__(
        self,
        settings: Settings,
        slos: SloFile,
        *,
        api_responses: Any,
        api_latency: Any,
        query_latency: Any,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = settings.slo_counts_path
        self.keep = slos.window + dt.timedelta(days=1)
        self.clock = clock
        self.readers: dict[str, Callable[[], tuple[float, float]]] = {}
        for slo in slos.slos:
            if slo.name == INGEST_AVAILABILITY:
                self.readers[slo.name] = functools.partial(_response_counts, api_responses)
            elif slo.name == INGEST_ACK_LATENCY:
                self.readers[slo.name] = functools.partial(
                    _histogram_counts, api_latency, slo.threshold_seconds or 0.0
                )
            elif slo.name == QUERY_LATENCY:
                self.readers[slo.name] = functools.partial(
                    _histogram_counts, query_latency, slo.threshold_seconds or 0.0
                )
        self.last = {name: (0.0, 0.0) for name in self.readers}
        self.lock = threading.Lock()

    def flush(self) -> None:
        """Add what the counters gained since the last flush to the current minute."""
        with self.lock:
            now = self.clock()
            minute = int(now) - int(now) % MINUTE
            rows = []
            for name, counts in self.readers.items():
                total, good = counts()
                before_total, before_good = self.last[name]
                if total > before_total:
                    rows.append((minute, name, int(total - before_total), int(good - before_good)))
                self.last[name] = (total, good)
            with contextlib.closing(_connect(self.path)) as con:
                con.execute("begin")
                con.executemany(
                    "insert into minute_counts (minute_start, slo, total, good) "
                    "values (?, ?, ?, ?) on conflict (minute_start, slo) do update set "
                    "total = total + excluded.total, good = good + excluded.good",
                    rows,
                )
                con.execute(
                    "delete from minute_counts where minute_start < ?",
                    [int(now - self.keep.total_seconds())],
                )
                con.execute("commit")

    @contextlib.asynccontextmanager
    async def running(
        self, every: float = RECORD_SECONDS, warm: Callable[[], object] | None = None
    ) -> AsyncIterator[None]:
        """Flush every ``every`` seconds while the block runs, and once at its end; first
        call ``warm`` in a thread (the SLO gauges' first reading, which imports Dagster)."""

        async def loop() -> None:
            if warm is not None:
                await asyncio.to_thread(warm)
            while True:
                await asyncio.sleep(every)
                await asyncio.to_thread(self.flush)

        task = asyncio.create_task(loop())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await asyncio.to_thread(self.flush)


def _recorded(path: Path, name: str, start: float, end: float) -> tuple[int, int]:
    if not path.exists():
        return 0, 0
    with contextlib.closing(_connect(path, read_only=True)) as con:
        total, good = con.execute(
            "select coalesce(sum(total), 0), coalesce(sum(good), 0) from minute_counts "
            "where slo = ? and minute_start >= ? and minute_start < ?",
            [name, int(start), int(end)],
        ).fetchone()
    return int(total), int(good)


def _lag_counts(settings: Settings, threshold: float, start: float, end: float) -> tuple[int, int]:
    path = settings.realtime_store_path
    if not path.exists():
        return 0, 0
    first = dt.datetime.fromtimestamp(start - start % MINUTE, dt.UTC)
    last = dt.datetime.fromtimestamp(end - end % MINUTE + MINUTE, dt.UTC)
    buckets = read.lag_buckets(path, first, last)
    within = store.LAG_BUCKETS.index(threshold)
    return sum(buckets.values()), sum(n for index, n in buckets.items() if index <= within)


# -- batch freshness, from the Dagster instance --------------------------------------------


@dataclass(frozen=True)
class MartBuilds:
    """When each day's daily marts were all first built (epoch seconds), the first build of
    any mart partition (None: none yet), and the marts' deadline (cron, from
    ``orchestration.lib.MARTS_FRESHNESS``)."""

    built_at: dict[dt.date, float]
    first_build: float | None
    deadline_cron: str
    start_date: dt.date


def mart_builds(settings: Settings, since: float) -> MartBuilds:
    """The first materialization of each daily mart partition since ``since`` (a day's marts
    are built only after the day), read from the data directory's Dagster instance."""
    if not (settings.dagster_home / "dagster.yaml").exists():
        # No instance, no mart built: no deadline is due (nor Dagster imported).
        return MartBuilds({}, None, "", settings.start_date)
    import dagster as dg  # sluice serve imports Dagster only when asked

    from orchestration.lib import MARTS_FRESHNESS

    cron = MARTS_FRESHNESS.deadline_cron
    per_mart: dict[str, dict[str, float]] = {}
    first: float | None = None
    with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        for key in instance.get_asset_keys(prefix=["marts"]):
            built: dict[str, float] = {}
            cursor = None
            while True:
                result = instance.fetch_materializations(
                    dg.AssetRecordsFilter(asset_key=key, after_timestamp=since),
                    limit=1000,
                    cursor=cursor,
                    ascending=True,
                )
                for record in result.records:
                    partition = record.partition_key
                    if partition is not None:
                        built.setdefault(partition, record.timestamp)
                if not result.has_more:
                    break
                cursor = result.cursor
            if built:  # the daily marts (retention_weekly is one table, not per day)
                per_mart[key.to_user_string()] = built
                first = min(min(built.values()), first or math.inf)
    days: dict[dt.date, float] = {}
    if per_mart:
        common = set.intersection(*(set(built) for built in per_mart.values()))
        for partition in common:
            days[dt.date.fromisoformat(partition)] = max(b[partition] for b in per_mart.values())
    return MartBuilds(days, first, cron, settings.start_date)


def _deadline(cron: str, day: dt.date) -> float:
    """The first deadline tick after ``day`` ends: when its marts must be built."""
    from croniter import croniter  # type: ignore[import-untyped]

    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), dt.UTC)
    return float(croniter(cron, end - dt.timedelta(seconds=1)).get_next(float))


def freshness_counts(builds: MartBuilds, start: float, end: float) -> tuple[int, int]:
    """(minutes, fresh minutes) of ``[start, end)`` from the first mart build on: from its
    deadline until the next day's, a minute is stale while the day's marts are not all built.
    """
    if builds.first_build is None:
        return 0, 0
    start = max(start, builds.first_build - builds.first_build % MINUTE)
    if end <= start:
        return 0, 0
    stale = 0.0
    day = dt.datetime.fromtimestamp(start, dt.UTC).date() - dt.timedelta(days=2)
    while (due := _deadline(builds.deadline_cron, day)) < end:
        if day >= builds.start_date:
            next_due = _deadline(builds.deadline_cron, day + dt.timedelta(days=1))
            built = builds.built_at.get(day, math.inf)
            stale += max(0.0, min(built, next_due, end) - max(due, start))
        day += dt.timedelta(days=1)
    minutes = int((end - start) // MINUTE)
    return minutes, minutes - math.ceil(stale / MINUTE)


def is_fresh(builds: MartBuilds, now: float) -> bool | None:
    """Whether the marts meet their deadline now; None before any mart was built."""
    if builds.first_build is None:
        return None
    total, good = freshness_counts(builds, now - MINUTE, now)
    return total == 0 or good == total


# -- the SLOs now ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SloStatus:
    slo: Slo
    window: dt.timedelta
    events: int  # events (requests, minutes) in the window
    sli: float | None  # good / events; None without events
    budget_remaining: float  # share of the error budget left (negative once overspent)
    burn_rates: dict[str, float | None]  # window name -> bad share / budget


def _status(
    slo: Slo, window: dt.timedelta, counts: Callable[[float], tuple[int, int]]
) -> SloStatus:
    total, good = counts(window.total_seconds())
    bad = total - good
    burn: dict[str, float | None] = {}
    for label, span in BURN_WINDOWS:
        recent_total, recent_good = counts(span.total_seconds())
        burn[label] = (
            (recent_total - recent_good) / recent_total / slo.budget if recent_total else None
        )
    return SloStatus(
        slo=slo,
        window=window,
        events=total,
        sli=good / total if total else None,
        budget_remaining=1.0 - (bad / (total * slo.budget)) if total else 1.0,
        burn_rates=burn,
    )


def _freshness_span(builds: MartBuilds | None, end: float, span: float) -> tuple[int, int]:
    return (0, 0) if builds is None else freshness_counts(builds, end - span, end)


def measure(
    settings: Settings, slos: SloFile, now: float | None = None, builds: MartBuilds | None = None
) -> list[SloStatus]:
    """Every SLO of ``slos`` over its window up to ``now`` (default: the clock)."""
    end = time.time() if now is None else now
    if builds is None and slos.get(BATCH_FRESHNESS) is not None:
        builds = mart_builds(settings, end - slos.window.total_seconds() - 3 * 86400)
    statuses = []
    for slo in slos.slos:
        counter: Callable[[float], tuple[int, int]]
        if slo.name in RECORDED:
            path = settings.slo_counts_path

            def counter(span: float, name: str = slo.name, path: Path = path) -> tuple[int, int]:
                return _recorded(path, name, end - span, end)

        elif slo.name == REALTIME_LAG:
            threshold = slo.threshold_seconds or 0.0

            def counter(span: float, threshold: float = threshold) -> tuple[int, int]:
                return _lag_counts(settings, threshold, end - span, end)

        else:
            counter = functools.partial(_freshness_span, builds, end)

        statuses.append(_status(slo, slos.window, counter))
    return statuses


def _percent(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value * 100:.{digits}f}%"


TABLE_HEADER = ("slo", "tier", "objective", "sli", "events", "budget left", "burn 1h", "burn 6h")


def table_rows(statuses: Sequence[SloStatus]) -> list[tuple[str, ...]]:
    """The rows of ``sluice slo`` (columns ``TABLE_HEADER``)."""
    rows = []
    for status in statuses:
        slo = status.slo
        name = slo.name + (f" (<= {slo.threshold_seconds:g} s)" if slo.threshold_seconds else "")
        burn = (
            "-" if status.burn_rates[label] is None else f"{status.burn_rates[label]:.2f}x"
            for label, _ in BURN_WINDOWS
        )
        rows.append(
            (
                name,
                slo.tier,
                _percent(slo.objective, 1),
                _percent(status.sli),
                f"{status.events:,}",
                _percent(status.budget_remaining, 1),
                *burn,
            )
        )
    return rows


class SloCollector(Collector):
    """The ``sluice_slo_*`` gauges of ``/metrics``, measured at each scrape; the marts'
    builds (the Dagster event log) are read at most every ``COLLECT_CACHE_SECONDS``."""

    def __init__(
        self,
        settings: Settings,
        slos: SloFile,
        before: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.slos = slos
        self.before = before  # the recorder's flush, so the counts include this moment
        self.clock = clock
        self.lock = threading.Lock()
        self.builds: tuple[float, MartBuilds] | None = None
        self.last: list[Metric] = []
        self.error: str | None = None

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def warm(self) -> None:
        """Read the marts' builds once now (importing Dagster), not at the first scrape."""
        list(self.collect())

    def collect(self) -> Iterator[Metric]:
        with self.lock:
            try:
                self.last = self._measure(self.clock())
                self.error = None
            except Exception as error:  # a store or instance that cannot be read
                # The rest of /metrics still answers; the last figures stay (none at first).
                message = f"{type(error).__name__}: {error}".splitlines()[0]
                if message != self.error:
                    log.warning("the SLOs cannot be measured: %s", message)
                self.error = message
            metrics = self.last
        yield from metrics

    def _mart_builds(self, now: float) -> MartBuilds | None:
        if self.slos.get(BATCH_FRESHNESS) is None:
            return None
        if self.builds is None or now - self.builds[0] >= COLLECT_CACHE_SECONDS:
            since = now - self.slos.window.total_seconds() - 3 * 86400
            self.builds = (now, mart_builds(self.settings, since))
        return self.builds[1]

    def _measure(self, now: float) -> list[Metric]:
        if self.before is not None:
            self.before()
        builds = self._mart_builds(now)
        statuses = measure(self.settings, self.slos, now, builds)
        objective = GaugeMetricFamily(
            "sluice_slo_objective", "Each SLO's objective (ops/slos.yml).", labels=["slo"]
        )
        sli = GaugeMetricFamily(
            "sluice_slo_sli",
            "Each SLO's good share over its window (absent without events).",
            labels=["slo"],
        )
        events = GaugeMetricFamily(
            "sluice_slo_events", "Events each SLO counted over its window.", labels=["slo"]
        )
        budget = GaugeMetricFamily(
            "sluice_slo_error_budget_remaining",
            "Share of each SLO's error budget left over its window (negative once overspent).",
            labels=["slo"],
        )
        burn = GaugeMetricFamily(
            "sluice_slo_burn_rate",
            "Bad share over the last window / the SLO's budget share (absent without events).",
            labels=["slo", "window"],
        )
        for status in statuses:
            name = status.slo.name
            objective.add_metric([name], status.slo.objective)
            events.add_metric([name], status.events)
            budget.add_metric([name], status.budget_remaining)
            if status.sli is not None:
                sli.add_metric([name], status.sli)
            for label, rate in status.burn_rates.items():
                if rate is not None:
                    burn.add_metric([name, label], rate)
        metrics: list[Metric] = [objective, sli, events, budget, burn]
        fresh = is_fresh(builds, now) if builds is not None else None
        if fresh is not None:
            metrics.append(
                GaugeMetricFamily(
                    "sluice_slo_batch_fresh",
                    "1 while yesterday's daily marts are built or their deadline (03:00 UTC) "
                    "has not passed; absent before the first mart is built.",
                    value=float(fresh),
                )
            )
        return metrics


# -- Prometheus rules -----------------------------------------------------------------------


def _le(threshold: float) -> str:
    """The ``le`` label of a bound, as prometheus_client ("5.0") or Go ("5") write it."""
    return "|".join(dict.fromkeys((floatToGoString(threshold), f"{threshold:g}")))


def error_ratio_expr(slo: Slo, window: str) -> str:
    """PromQL: the share of bad events of ``slo`` over the last ``window``."""
    if slo.name == INGEST_AVAILABILITY:
        return (
            f'(sum(rate(sluice_api_responses_total{{status=~"5.."}}[{window}])) or vector(0))'
            f"\n/\nsum(rate(sluice_api_responses_total[{window}]))"
        )
    if slo.name == BATCH_FRESHNESS:
        return f"1 - avg_over_time(sluice_slo_batch_fresh[{window}])"
    metric = _HISTOGRAMS[slo.name]
    le = _le(slo.threshold_seconds or 0.0)
    return (
        f'1 - (\n  sum(rate({metric}_bucket{{le=~"{le}"}}[{window}]))\n  /\n'
        f"  sum(rate({metric}_count[{window}]))\n)"
    )


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def prometheus_rules(slos: SloFile) -> dict[str, Any]:
    """Recording rules (each SLO's error ratio over the alert windows) and two alerts per
    SLO: a page when two windows burn fast, a ticket when they burn slowly."""
    recording = []
    for slo in slos.slos:
        for window in RULE_WINDOWS:
            recording.append(
                {
                    "record": f"sluice:slo_errors:ratio_rate{window}",
                    "expr": error_ratio_expr(slo, window),
                    "labels": {"slo": slo.name, "tier": slo.tier},
                }
            )
    alerts = []
    for slo in slos.slos:
        for severity in ("page", "ticket"):
            conditions = []
            for level, long, short, rate in BURN_ALERTS:
                if level != severity:
                    continue
                limit = f"({rate:g} * {slo.budget:.6g})"
                conditions.append(
                    f'(\n  sluice:slo_errors:ratio_rate{long}{{slo="{slo.name}"}} > {limit}\n'
                    f'  and\n  sluice:slo_errors:ratio_rate{short}{{slo="{slo.name}"}} > {limit}\n)'
                )
            pairs = ", ".join(
                f"{rate:g}x over {long} and {short}"
                for level, long, short, rate in BURN_ALERTS
                if level == severity
            )
            alerts.append(
                {
                    "alert": f"Sluice{_camel(slo.name)}Budget{ALERT_SUFFIX[severity]}",
                    "expr": "\nor\n".join(conditions),
                    "for": "2m" if severity == "page" else "15m",
                    "labels": {"severity": severity, "slo": slo.name, "tier": slo.tier},
                    "annotations": {
                        "summary": f"{slo.name} is spending its error budget too fast ({pairs})",
                        "description": (
                            f"{slo.description} Objective {slo.objective:g} over "
                            f"{slos.window.days} days; the long window's bad share is "
                            "{{ $value | humanizePercentage }}. "
                            "Run `sluice slo` for the budget left."
                        ),
                        "runbook_url": RUNBOOK,
                    },
                }
            )
    return {
        "groups": [
            {"name": "sluice_slo_recording", "rules": recording},
            {"name": "sluice_slo_alerts", "rules": alerts},
        ]
    }


def rules_yaml(slos: SloFile) -> str:
    header = (
        "# Generated from ops/slos.yml by `python -m sluice.slo --prometheus-rules`; edit that\n"
        "# file and generate this one again (a test checks that both agree).\n"
    )

    class _Dumper(yaml.SafeDumper):
        pass

    def text(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    _Dumper.add_representer(str, text)
    return header + yaml.dump(prometheus_rules(slos), Dumper=_Dumper, sort_keys=False, width=100)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sluice.slo")
    parser.add_argument("--prometheus-rules", action="store_true", help="print rules.yml")
    parser.add_argument("--file", type=Path, default=SLO_FILE, help="the SLO file")
    args = parser.parse_args(argv)
    if args.prometheus_rules:
        print(rules_yaml(load_slos(args.file)), end="")
    else:
        parser.print_help()


if __name__ == "__main__":
    main()
