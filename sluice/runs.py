"""Run Sluice's Dagster jobs in this process against the data directory's Dagster instance,
so every run a command starts shows in the UI (``make dev``) like any other run."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

import dagster as dg

from orchestration.definitions import build_definitions
from orchestration.transform.automation import range_tags
from sluice.prepare import prepare
from sluice.settings import Settings


class RunFailed(RuntimeError):
    """A Dagster run failed; the message is one line a user can act on."""


@dataclass(frozen=True)
class RunOutcome:
    run_id: str
    job_name: str
    success: bool
    message: str


_QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def _failure_message(result: dg.ExecuteInProcessResult, settings: Settings) -> str:
    for event in result.all_events:
        if event.event_type_value != "STEP_FAILURE" or event.step_failure_data is None:
            continue
        error = event.step_failure_data.error
        texts = []
        while error is not None:
            texts.append(error.message.strip())
            error = error.cause
        text = " | ".join(texts)
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
        first_line = texts[-1].splitlines()[0] if texts else "unknown error"
        return f"step {event.step_key} failed: {first_line}"
    return "the run failed; see the run's logs in the Dagster UI"


def run_job(
    settings: Settings,
    job_name: str,
    tags: Mapping[str, str] | None = None,
    instance: dg.DagsterInstance | None = None,
) -> RunOutcome:
    prepare(settings)
    defs = build_definitions(settings)
    job = defs.resolve_job_def(job_name)
    own_instance = instance is None
    instance = instance or dg.DagsterInstance.from_config(str(settings.dagster_home))
    settings.run_log_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # dbt's console output goes to the run log, not the terminal of whoever started it.
        with settings.run_log_path.open("a") as log, contextlib.redirect_stdout(log):
            result = job.execute_in_process(
                instance=instance, tags=dict(tags or {}), run_config=_QUIET, raise_on_error=False
            )
    finally:
        if own_instance:
            instance.dispose()
    message = "" if result.success else _failure_message(result, settings)
    return RunOutcome(result.run_id, job_name, result.success, message)


def materialize_range(
    settings: Settings, first: dt.date, last: dt.date, job_name: str = "elt"
) -> RunOutcome:
    """Load, then build facts and marts for first..last (both included) as ONE run."""
    if last < first:
        raise ValueError(f"--end {last} is before --start {first}")
    if first < settings.start_date:
        raise ValueError(
            f"--start {first} is before the first partition {settings.start_date} "
            "(set SLUICE_START_DATE to an earlier day)"
        )
    yesterday = dt.date.today() - dt.timedelta(days=1)
    if last > yesterday:
        raise ValueError(
            f"--end {last} is after yesterday ({yesterday}): a day is built once it is over"
        )
    return run_job(settings, job_name, range_tags(first.isoformat(), last.isoformat()))
