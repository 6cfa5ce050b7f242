"""Run Sluice's Dagster jobs in this process against the data directory's Dagster instance,
so every run a command starts shows in the UI (``make dev``) like any other run.

A run's console output (dbt's, dlt's and Dagster's own logs, tracebacks included) goes to the
data directory's run log; what the command shows is read back from the run: one line when it
failed, the load's and the build's counts from the assets' materializations, and the warnings
the assets logged.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import click
import dagster as dg

from common.settings import RAW_EVENTS_TABLE, RAW_REJECTED_TABLE, RAW_SCHEMA, Settings
from orchestration.definitions import build_definitions
from orchestration.maintain.horizons import first_partition
from orchestration.prepare import prepare
from orchestration.transform.automation import range_tags


class RunFailed(click.ClickException):
    """A run could not start or failed; the message is one line a user can act on (the CLI
    prints it as its error)."""


SPARK_DOWN = "the Spark cluster is not running: start it with `sluice spark up`"


def check_engine(settings: Settings) -> None:
    """On Spark, raise RunFailed unless its Thrift server answers: without it every dbt step
    would fail after the load, each with a long connection error."""
    if settings.warehouse_engine != "spark":
        return
    from common.spark import thrift_answers

    if not thrift_answers(settings):
        raise RunFailed(SPARK_DOWN)


@dataclass(frozen=True)
class LoadSummary:
    """What a run's load did, from the load asset's materialization metadata
    (orchestration/ingest/assets.py)."""

    new_files: int
    skipped_files: int
    loaded_rows: int
    rejected_rows: int
    rejected_by_reason: Mapping[str, int]


@dataclass(frozen=True)
class RunOutcome:
    run_id: str
    job_name: str
    success: bool
    message: str
    # None when the run loaded nothing (a build-only job, or a failure before the load).
    load: LoadSummary | None = None
    # The daily partitions the run materialized, in order.
    days_built: tuple[str, ...] = ()
    # Per dbt model (asset key), its rows in the days the run replaced: the window, widened
    # for the models whose rows depend on other days (orchestration/transform/assets.py).
    rows_in_window: Mapping[str, int] = field(default_factory=dict)
    # What the run's assets logged as warnings (late events beyond the lookback, say).
    warnings: tuple[str, ...] = ()
    # Per op of an op job (retention, compact), the metadata of its output.
    outputs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


_QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
# The instance's daemon retries failed runs (`run_retries` in dagster.yaml), but a run
# executed in this process has no code location it could re-execute from: without this
# tag, a failed run would say "will retry" in the UI and the alert of a failed run
# (orchestration/alerts.py) would wait for a retry that never comes.
_NOT_RETRIED = {"dagster/max_retries": "0"}


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_MISSING_TABLE = re.compile(r"Table with name (\w+) does not exist")
# dbt's own summary of a failed node: "Runtime Error in model stg_events (models/...)"
# and, on the next line, what went wrong.
_DBT_ERROR = re.compile(r"^\s*(\w[\w ]* Error in \w+ \S+)[^\n]*\n\s*([^\n]+)", re.MULTILINE)
_DBT_LOG = re.compile(r"view the dbt debug log: (\S+?)\.?\s*$", re.MULTILINE)


def dbt_failure(text: str, settings: Settings) -> str | None:
    """One line for a failed dbt invocation, from the errors dagster-dbt parsed from dbt's
    log; None when the text is not from dbt."""
    missing = _MISSING_TABLE.search(text)
    if missing and missing.group(1) in (RAW_EVENTS_TABLE, RAW_REJECTED_TABLE):
        # A warehouse that no load has written to: dbt's staging views find no raw tables.
        return (
            f"no events have been loaded yet ({RAW_SCHEMA}.{missing.group(1)} does not exist in "
            f"{settings.warehouse_path}): put event files in {settings.landing_dir} "
            "(`sluice generate`, or send them to `sluice serve`), then retry"
        )
    error = _DBT_ERROR.search(text)
    if error is None:
        return None
    log = _DBT_LOG.search(text)
    where = f" (dbt's log: {log.group(1)})" if log else ""
    return f"dbt: {error.group(1)}: {error.group(2).strip()}{where}"


def _failure_message(result: dg.ExecuteInProcessResult, settings: Settings) -> str:
    for event in result.all_events:
        if event.event_type_value != "STEP_FAILURE" or event.step_failure_data is None:
            continue
        error = event.step_failure_data.error
        texts = []
        while error is not None:
            texts.append(error.message.strip())
            error = error.cause
        text = _ANSI.sub("", " | ".join(texts))
        # DuckDB's own words for a file another process holds ("block" has "lock" in it too).
        if "Could not set lock on file" in text or "Conflicting lock is held" in text:
            return (
                f"the warehouse {settings.warehouse_path} is open in another process "
                "(a DuckDB CLI or a BI tool?); close it and retry"
            )
        if "Out of Memory Error" in text:
            return (
                f"step {event.step_key} ran out of memory in DuckDB (SLUICE_DUCKDB_MEMORY_LIMIT="
                f"{settings.duckdb_memory_limit}, SLUICE_DUCKDB_THREADS={settings.duckdb_threads})"
                ": raise the limit or use fewer threads, or build fewer days at once"
            )
        dbt = dbt_failure(text, settings)
        if dbt is not None:
            return f"step {event.step_key} failed: {dbt}"
        first_line = texts[-1].splitlines()[0] if texts else "unknown error"
        log = settings.run_log_path
        return f"step {event.step_key} failed: {first_line} (the run's log: {log})"
    return "the run failed; see the run's logs in the Dagster UI"


def _values(metadata: Mapping[str, Any]) -> dict[str, Any]:
    return {name: getattr(value, "value", value) for name, value in metadata.items()}


def _outcome(
    result: dg.ExecuteInProcessResult,
    job_name: str,
    message: str,
    warnings: tuple[str, ...],
) -> RunOutcome:
    """The outcome of a run, with what its assets' materializations say they did."""
    load = None
    days: set[str] = set()
    rows: dict[str, int] = {}
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        metadata = _values(materialization.metadata)
        if materialization.partition is not None:
            days.add(materialization.partition)
        if load is None and "loaded_rows" in metadata:
            load = LoadSummary(
                new_files=int(metadata["new_files"]),
                skipped_files=int(metadata["skipped_files"]),
                loaded_rows=int(metadata["loaded_rows"]),
                rejected_rows=int(metadata["rejected_rows"]),
                rejected_by_reason=dict(metadata.get("rejected_by_reason") or {}),
            )
        if "rows_in_window" in metadata:
            # A range run materializes each day with the same counts: one entry per model.
            rows[materialization.asset_key.to_user_string()] = int(metadata["rows_in_window"])
    outputs = {
        event.step_key or "": _values(event.step_output_data.metadata)
        for event in result.all_events
        if event.event_type_value == "STEP_OUTPUT" and event.step_output_data.metadata
    }
    return RunOutcome(
        result.run_id,
        job_name,
        result.success,
        message,
        load=load,
        days_built=tuple(sorted(days)),
        rows_in_window=dict(sorted(rows.items())),
        warnings=warnings,
        outputs=outputs,
    )


def _logged_warnings(instance: dg.DagsterInstance, run_id: str) -> tuple[str, ...]:
    """Warnings logged during the run (``context.log.warning``), not Dagster's events."""
    warnings = []
    for entry in instance.all_logs(run_id):
        level = entry.level if isinstance(entry.level, int) else logging.getLevelName(entry.level)
        if level >= logging.WARNING and not entry.is_dagster_event:
            warnings.append(entry.user_message)
    return tuple(warnings)


def run_job(
    settings: Settings,
    job_name: str,
    tags: Mapping[str, str] | None = None,
    instance: dg.DagsterInstance | None = None,
    op_config: Mapping[str, Mapping[str, Any]] | None = None,
) -> RunOutcome:
    """Run a job of the definitions; ``op_config`` is each op's config, by op name. On Spark,
    raises RunFailed at once when the cluster does not answer."""
    check_engine(settings)
    prepare(settings)
    defs = build_definitions(settings)
    job = defs.resolve_job_def(job_name)
    own_instance = instance is None
    instance = instance or dg.DagsterInstance.from_config(str(settings.dagster_home))
    settings.run_log_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # dbt's console output and Dagster's logs (a failed step's traceback among them) go to
        # the run log, not the terminal of whoever started it: the command prints one line.
        with (
            settings.run_log_path.open("a") as log,
            contextlib.redirect_stdout(log),
            contextlib.redirect_stderr(log),
        ):
            ops = {name: {"config": dict(config)} for name, config in (op_config or {}).items()}
            result = job.execute_in_process(
                instance=instance,
                tags={**_NOT_RETRIED, **(tags or {})},
                run_config={**_QUIET, "ops": ops} if ops else _QUIET,
                raise_on_error=False,
            )
        warnings = _logged_warnings(instance, result.run_id)
    finally:
        if own_instance:
            instance.dispose()
    message = "" if result.success else _failure_message(result, settings)
    return _outcome(result, job_name, message, warnings)


def check_range(settings: Settings, first: dt.date, last: dt.date) -> None:
    """Raise ValueError, with a message a user can act on, unless first..last (both
    included) are days of the daily partitions that are over."""
    if last < first:
        raise ValueError(f"--end {last} is before --start {first}")
    start, dropped = first_partition(settings)
    if first < start and dropped is not None:
        raise ValueError(
            f"--start {first} is before {start}: retention dropped the days before it from "
            f"{dropped.layer} ({dropped.setting}), so they can no longer be built (their marts "
            f"stay as they were built); build from {start} on"
        )
    if first < start:
        raise ValueError(
            f"--start {first} is before the first partition {start} "
            "(set SLUICE_START_DATE to an earlier day)"
        )
    yesterday = dt.date.today() - dt.timedelta(days=1)
    if last > yesterday:
        raise ValueError(
            f"--end {last} is after yesterday ({yesterday}): a day is built once it is over"
        )


def materialize_range(
    settings: Settings, first: dt.date, last: dt.date, job_name: str = "elt"
) -> RunOutcome:
    """Load, then build facts and marts for first..last (both included) as ONE run."""
    check_range(settings, first, last)
    return run_job(settings, job_name, range_tags(first.isoformat(), last.isoformat()))
