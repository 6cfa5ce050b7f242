"""Reconcile the real-time tier with the marts, day by day: a partitioned asset check on
``marts/event_counts_daily``, ``marts/revenue_daily`` and ``marts/dau``.

Once a run builds a day's marts, this check compares them with the day's minute windows of
``sluice stream`` (``realtime.read``), both deduplicated, by the same metric rules
(docs/events.md). The real-time tier leaves out the events older than its watermark and
counts them, by the UTC day of their event time (``read.late_by_day``); so it may be lower
than the marts by at most that day's late events, and never higher:

- events, in total and by name (a ``track``'s event, else the message type): real time
  between marts - late and marts, and no name higher than in the marts;
- orders: the same rule; revenue in US dollars: equal within a cent (floating-point sums in
  another order) when the orders are equal, else not higher than the marts';
- active users: the real-time figure is an HLL estimate (``lg_k`` 14), so it may be off by
  3 standard errors (3 x 1.04 / sqrt(2^14), 2.4%) either way, and lower by the late events.

A difference beyond these fails the check with severity ERROR; its metadata holds both
figures, the difference and the day's late events. A day the real-time tier does not cover
passes, its metadata saying why: no store (``sluice stream`` never ran), a day the watermark
has not passed yet, a day whose windows are past ``SLUICE_REALTIME_RETENTION_DAYS`` or before
the store's first minute, or a day with events from landing files outside
``landing/sources/`` (batch drops, which the worker does not read).

One multi-asset check reads the store and the warehouse once per day for the three marts,
and can be subset. It runs in the run that builds the marts: one partition, or each day of a
range (a backfill is one run), one result per day (``AssetCheckEvaluation`` with its
partition). It reads the marts on the warehouse engine (``orchestration.lib.read_warehouse``:
the DuckDB file read-only once dbt has released it, or Spark's Thrift server) in the run's
process, in the warehouse pool. Settings: ``SLUICE_DATA_DIR`` (store and warehouse),
``SLUICE_REALTIME_LATENESS_SECONDS``, ``SLUICE_REALTIME_RETENTION_DAYS``.
"""

import contextlib
import datetime as dt
import math
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

# Dagster exports the evaluation but not its target: the materialization a result is about.
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)

from common.settings import MARTS_SCHEMA, WAREHOUSE_POOL, Settings
from orchestration.lib import WarehouseReader, read_warehouse, sql_date, window_dates
from realtime import read, store
from realtime.windows import SKETCH_LG_K

CHECK_NAME = "reconciles_with_real_time"
EVENTS_KEY = dg.AssetKey([MARTS_SCHEMA, "event_counts_daily"])
REVENUE_KEY = dg.AssetKey([MARTS_SCHEMA, "revenue_daily"])
DAU_KEY = dg.AssetKey([MARTS_SCHEMA, "dau"])

# HLL's relative standard error is about 1.04 / sqrt(2^lg_k); 3 of them bound the estimate.
USERS_RELATIVE_BOUND = 3 * 1.04 / math.sqrt(2**SKETCH_LG_K)
# Revenue is summed in another order by each tier: a cent covers the floating-point difference.
REVENUE_TOLERANCE_USD = 0.01
# The folder of landing/ that the real-time worker tails (the ingest API's segments).
SOURCES_PREFIX = "sources/"
CORE_SCHEMA = "core"

_NOT_COVERED = "not covered"
_DESCRIPTIONS = {
    EVENTS_KEY: (
        "The day's events, in total and by name, equal the real-time tier's (sluice stream), "
        "which may be lower by at most the late events of that day and never higher; passes "
        "with 'not covered' when the real-time tier does not cover the day."
    ),
    REVENUE_KEY: (
        "The day's orders and revenue equal the real-time tier's (sluice stream): orders lower "
        "by at most the late events of that day, revenue within a cent when the orders match, "
        "never higher; passes with 'not covered' when the real-time tier does not cover the day."
    ),
    DAU_KEY: (
        "The day's active users match the real-time tier's HLL estimate (sluice stream) within "
        f"{USERS_RELATIVE_BOUND:.1%} (3 standard errors at lg_k {SKETCH_LG_K}), lower by at most "
        "the late events of that day; passes with 'not covered' when the real-time tier does "
        "not cover the day."
    ),
}


@dataclass(frozen=True)
class BatchDay:
    """A day of the marts, by the real-time tier's names."""

    events_by_name: dict[str, int] = field(default_factory=dict)
    orders: int = 0
    revenue_usd: float = 0.0
    active_users: int = 0
    # Events of the day from landing files the real-time worker does not read.
    events_outside_sources: int = 0

    @property
    def events(self) -> int:
        return sum(self.events_by_name.values())


@dataclass(frozen=True)
class Verdict:
    passed: bool
    description: str
    metadata: dict[str, Any]


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), dt.UTC)


def batch_day(warehouse: WarehouseReader, day: dt.date) -> BatchDay:
    """The day's figures from the marts (and, for coverage, where its events came from)."""
    on = sql_date(day)
    # The real-time tier names an event by a track's event, else by its message type.
    by_name = warehouse.rows(
        "select case when event_type = 'track' then event_name else event_type end, "
        f"sum(events) from {MARTS_SCHEMA}.event_counts_daily where event_date = {on} group by 1"
    )
    money = warehouse.rows(
        f"select orders, revenue_usd from {MARTS_SCHEMA}.revenue_daily where event_date = {on}"
    )
    users = warehouse.rows(f"select active_users from {MARTS_SCHEMA}.dau where event_date = {on}")
    outside = warehouse.rows(
        f"select count(*) from {CORE_SCHEMA}.fct_events "
        f"where event_date = {on} and source_file not like '{SOURCES_PREFIX}%'"
    )
    return BatchDay(
        events_by_name={str(name): int(n) for name, n in by_name},
        orders=int(money[0][0]) if money else 0,
        revenue_usd=float(money[0][1]) if money else 0.0,
        active_users=int(users[0][0]) if users else 0,
        events_outside_sources=int(outside[0][0]) if outside else 0,
    )


def not_covered_because(settings: Settings, day: dt.date, batch: BatchDay) -> str | None:
    """Why the real-time tier does not cover ``day`` (None when it does)."""
    path = settings.realtime_store_path
    if not path.exists():
        return f"there is no real-time store ({path}): `sluice stream` has never run here"
    newest = read.newest_event_at(path)
    if newest is None:
        return "the real-time tier has seen no event yet"
    start, end = _midnight(day), _midnight(day + dt.timedelta(days=1))
    watermark = newest - dt.timedelta(seconds=settings.realtime_lateness_seconds)
    if watermark < end:
        return f"the real-time tier has not closed the day yet: its watermark is {watermark}"
    kept_from = newest - dt.timedelta(days=settings.realtime_retention_days)
    if start < kept_from:
        return (
            f"the real-time tier keeps minute windows from {kept_from} on "
            f"(SLUICE_REALTIME_RETENTION_DAYS={settings.realtime_retention_days})"
        )
    with contextlib.closing(store.connect(path, read_only=True)) as con:
        (oldest,) = con.execute("select min(minute_start) from minute_events").fetchone()
    if oldest is None or oldest >= end.timestamp():
        return "the real-time store's windows begin after this day"
    if batch.events_outside_sources:
        return (
            f"{batch.events_outside_sources} events of the day came from landing files outside "
            f"{settings.api_sources_dir} (batch drops), which the real-time tier does not read"
        )
    return None


def _lower_by_at_most(batch: float, realtime: float, allowed: float) -> bool:
    return 0 <= batch - realtime <= allowed


def _why(passed: bool, *, higher: bool, what: str) -> str:
    """What a failed result's description adds: which way the tiers differ."""
    if passed:
        return ""
    if higher:
        return f": the real-time tier is higher ({what}), which late events cannot explain"
    return f": the real-time tier is lower ({what}) by more than the late events explain"


def compare(batch: BatchDay, live: read.Figures, late: int) -> dict[dg.AssetKey, Verdict]:
    """Each mart's verdict on a covered day: the rules of the module docstring."""
    common = {"late_events": late}

    higher = {
        name: {"marts": batch.events_by_name.get(name, 0), "real_time": n}
        for name, n in live.events_by_name.items()
        if n > batch.events_by_name.get(name, 0)
    }
    lower = {
        name: {"marts": n, "real_time": live.events_by_name.get(name, 0)}
        for name, n in batch.events_by_name.items()
        if live.events_by_name.get(name, 0) < n
    }
    events_ok = not higher and _lower_by_at_most(batch.events, live.events, late)
    events = Verdict(
        events_ok,
        f"events: marts {batch.events}, real time {live.events}, {late} late"
        + _why(
            events_ok,
            higher=live.events > batch.events or bool(higher),
            what=", ".join(sorted(higher)) or "in total",
        ),
        {
            **common,
            "events_marts": batch.events,
            "events_real_time": live.events,
            "events_difference": batch.events - live.events,
            "events_allowed_difference": f"0 to {late}",
            "names_higher_in_real_time": higher,
            "names_lower_in_real_time": lower,
        },
    )

    orders_ok = _lower_by_at_most(batch.orders, live.orders, late)
    revenue_gap = batch.revenue_usd - live.revenue_usd
    if live.orders == batch.orders:
        revenue_ok = abs(revenue_gap) <= REVENUE_TOLERANCE_USD
    else:
        revenue_ok = revenue_gap >= -REVENUE_TOLERANCE_USD
    revenue = Verdict(
        orders_ok and revenue_ok,
        f"orders: marts {batch.orders}, real time {live.orders}; revenue: marts "
        f"{batch.revenue_usd:.2f} USD, real time {live.revenue_usd:.2f} USD; {late} late"
        + _why(
            orders_ok and revenue_ok,
            higher=live.orders > batch.orders or revenue_gap < -REVENUE_TOLERANCE_USD,
            what="orders" if not orders_ok else "revenue",
        ),
        {
            **common,
            "orders_marts": batch.orders,
            "orders_real_time": live.orders,
            "orders_difference": batch.orders - live.orders,
            "orders_allowed_difference": f"0 to {late}",
            "revenue_usd_marts": batch.revenue_usd,
            "revenue_usd_real_time": live.revenue_usd,
            "revenue_usd_difference": revenue_gap,
        },
    )

    bound = USERS_RELATIVE_BOUND * batch.active_users
    users_ok = batch.active_users - late - bound <= live.active_users <= batch.active_users + bound
    users = Verdict(
        users_ok,
        f"active users: marts {batch.active_users}, real time about "
        f"{live.active_users:.1f} (allowed {bound:.1f} either way, {late} late)"
        + _why(users_ok, higher=live.active_users > batch.active_users, what="active users"),
        {
            **common,
            "active_users_marts": batch.active_users,
            "active_users_real_time": live.active_users,
            "active_users_difference": batch.active_users - live.active_users,
            "active_users_allowed_difference": bound,
        },
    )
    return {EVENTS_KEY: events, REVENUE_KEY: revenue, DAU_KEY: users}


def reconcile_day(
    settings: Settings, warehouse: WarehouseReader, day: dt.date
) -> dict[dg.AssetKey, Verdict]:
    """Each mart's verdict for ``day``: compared, or passed as not covered."""
    batch = batch_day(warehouse, day)
    reason = not_covered_because(settings, day, batch)
    if reason is not None:
        verdict = Verdict(True, f"{_NOT_COVERED}: {reason}", {"covered": False, "reason": reason})
        return dict.fromkeys(_DESCRIPTIONS, verdict)
    path = settings.realtime_store_path
    live = read.total(path, _midnight(day), _midnight(day + dt.timedelta(days=1)))
    verdicts = compare(batch, live, read.late_by_day(path, day))
    return {
        key: Verdict(v.passed, v.description, {"covered": True, **v.metadata})
        for key, v in verdicts.items()
    }


def _days(
    context: dg.AssetCheckExecutionContext, partitions: dg.DailyPartitionsDefinition
) -> list[dt.date]:
    """The run's days: its partition or range; yesterday for a run without one."""
    if context.has_partition_key or context.has_partition_key_range:
        first, last = window_dates(context.partition_time_window)
    else:
        key = partitions.get_last_partition_key()
        if key is None:
            return []
        first = last = dt.date.fromisoformat(key)
    return [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]


def _target(
    instance: dg.DagsterInstance, key: dg.AssetKey, partition: str
) -> AssetCheckEvaluationTargetMaterializationData | None:
    """The partition's latest materialization, which the result is about."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1
    ).records
    if not records:
        return None
    return AssetCheckEvaluationTargetMaterializationData(
        run_id=records[0].run_id, storage_id=records[0].storage_id, timestamp=records[0].timestamp
    )


def build_reconcile_check(
    settings: Settings, partitions: dg.DailyPartitionsDefinition
) -> dg.AssetChecksDefinition:
    # Partitioned checks are a preview in Dagster 1.13; they are what gives each day its own
    # result in the UI, so the preview's warning is not repeated at every load.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        specs = [
            dg.AssetCheckSpec(
                CHECK_NAME, asset=key, description=description, partitions_def=partitions
            )
            for key, description in _DESCRIPTIONS.items()
        ]

    @dg.multi_asset_check(
        name="reconcile_with_real_time",
        specs=specs,
        can_subset=True,
        pool=WAREHOUSE_POOL,
    )
    def reconcile_with_real_time(
        context: dg.AssetCheckExecutionContext,
    ) -> Iterator[dg.AssetCheckEvaluation]:
        keys = sorted(
            (k.asset_key for k in context.selected_asset_check_keys),
            key=lambda k: k.to_user_string(),
        )
        days = _days(context, partitions)
        with read_warehouse(settings) as warehouse:
            verdicts = {day: reconcile_day(settings, warehouse, day) for day in days}
        for day, by_key in verdicts.items():
            for key in keys:
                verdict = by_key[key]
                yield dg.AssetCheckEvaluation(
                    asset_key=key,
                    check_name=CHECK_NAME,
                    passed=verdict.passed,
                    metadata={"day": day.isoformat(), **_metadata(verdict.metadata)},
                    target_materialization_data=_target(context.instance, key, day.isoformat()),
                    severity=dg.AssetCheckSeverity.ERROR,
                    description=verdict.description,
                    partition=day.isoformat(),
                )

    return reconcile_with_real_time


def _metadata(values: Mapping[str, Any]) -> dict[str, Any]:
    """Dicts as JSON for the UI; numbers and text as they are."""
    return {
        name: dg.MetadataValue.json(value) if isinstance(value, dict) else value
        for name, value in values.items()
    }
