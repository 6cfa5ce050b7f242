"""What ``sluice status`` shows: partitions per asset, the last run, and freshness.

Reads only the Dagster instance of the data directory, never the warehouse.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import dagster as dg
from croniter import croniter  # type: ignore[import-untyped]
from dagster._core.definitions.freshness import CronFreshnessPolicy, TimeWindowFreshnessPolicy

from common.settings import Settings
from orchestration.definitions import build_definitions
from orchestration.prepare import prepare
from orchestration.transform.automation import RANGE_END_TAG, RANGE_START_TAG


@dataclass(frozen=True)
class AssetStatus:
    key: str
    materialized: str
    missing: str
    failed: str
    last_materialized: str
    freshness: str


@dataclass(frozen=True)
class StatusReport:
    assets: list[AssetStatus]
    last_run: str


def _failed_partitions(instance: dg.DagsterInstance) -> set[str]:
    days: set[str] = set()
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE])):
        tags = run.tags
        if RANGE_START_TAG in tags:
            first = dt.date.fromisoformat(tags[RANGE_START_TAG])
            last = dt.date.fromisoformat(tags[RANGE_END_TAG])
            days |= {(first + dt.timedelta(d)).isoformat() for d in range((last - first).days + 1)}
        elif "dagster/partition" in tags:
            days.add(tags["dagster/partition"])
    return days


def freshness_state(policy: object, last: float | None, now: dt.datetime) -> str:
    """PASS / WARN / FAIL of a freshness policy given the last materialization time."""
    if policy is None:
        return "-"
    if last is None:
        return "UNKNOWN"
    age = now - dt.datetime.fromtimestamp(last, dt.UTC)
    if isinstance(policy, TimeWindowFreshnessPolicy):
        if age > policy.fail_window.to_timedelta():
            return "FAIL"
        warn = policy.warn_window
        return "WARN" if warn is not None and age > warn.to_timedelta() else "PASS"
    if isinstance(policy, CronFreshnessPolicy):
        tick = croniter(policy.deadline_cron, now).get_prev(dt.datetime)
        needed = tick - policy.lower_bound_delta
        return "PASS" if dt.datetime.fromtimestamp(last, dt.UTC) >= needed else "FAIL"
    return "?"


def collect_status(settings: Settings) -> StatusReport:
    prepare(settings)
    defs = build_definitions(settings)
    graph = defs.resolve_asset_graph()
    now = dt.datetime.now(dt.UTC)
    rows: list[AssetStatus] = []
    with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        failed_days = _failed_partitions(instance)
        for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
            node = graph.get(key)
            if not node.is_materializable:
                continue
            event = instance.get_latest_materialization_event(key)
            last = event.timestamp if event else None
            when = (
                dt.datetime.fromtimestamp(last, dt.UTC).strftime("%Y-%m-%d %H:%M")
                if last
                else "never"
            )
            partitions = node.partitions_def
            if partitions is None:
                done, missing, failed = ("yes" if last else "no"), "-", "-"
            else:
                all_keys = set(partitions.get_partition_keys())
                built = instance.get_materialized_partitions(key) & all_keys
                gaps = all_keys - built
                done = f"{len(built)}/{len(all_keys)}"
                missing = str(len(gaps))
                failed = str(len(gaps & failed_days))
            rows.append(
                AssetStatus(
                    key.to_user_string(),
                    done,
                    missing,
                    failed,
                    when,
                    freshness_state(node.freshness_policy, last, now),
                )
            )
        runs = instance.get_runs(limit=1)
        last_run = (
            f"{runs[0].job_name} {runs[0].status.value} ({runs[0].run_id})" if runs else "none yet"
        )
    return StatusReport(rows, last_run)
