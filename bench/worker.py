"""The measured steps, each run in a fresh process: ``python -m bench.worker TASK JSON``.

A fresh process per step keeps one step's memory and caches out of the next one's figures.
The last line printed is a JSON object with ``seconds`` (the work itself, without start-up
and imports) and what the benchmark needs to check the output. Reads SLUICE_* variables
(through ``common.settings``) only for the Sluice tasks.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import baseline


def generate(params: dict[str, Any]) -> dict[str, Any]:
    from ingestion.generator import generate as write_events

    started = time.perf_counter()
    result = write_events(
        Path(params["out"]),
        dt.date.fromisoformat(params["start"]),
        int(params["days"]),
        int(params["users"]),
        int(params["seed"]),
    )
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "events": result.events,
        "lines": result.lines,
        "bytes": sum(f.stat().st_size for f in result.files),
        "files": [str(f) for f in result.files],
    }


def copy_files(params: dict[str, Any]) -> dict[str, Any]:
    """The generator's baseline: write the same bytes again (read, write, fsync, rename)."""
    out = Path(params["out"])
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    lines = 0
    for name in params["files"]:
        source = Path(name)
        data = source.read_bytes()
        lines += data.count(b"\n")
        tmp = out / (source.name + ".tmp")
        with tmp.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, out / source.name)
    return {"seconds": time.perf_counter() - started, "lines": lines}


def sluice_load(params: dict[str, Any]) -> dict[str, Any]:
    """Sluice's load step: the dlt pipeline over the landing source, as the load asset runs it."""

    from common.settings import load_settings
    from ingestion.landing import landing_source
    from ingestion.landing.helpers import LoadReport
    from ingestion.pipeline import make_pipeline

    settings = load_settings()
    started = time.perf_counter()
    report = LoadReport()
    make_pipeline(settings).run(landing_source(str(settings.landing_dir), report))
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "rows": report.loaded_rows, "rejected": report.rejected_rows}


def id_summary(params: dict[str, Any]) -> dict[str, Any]:
    """Rows, distinct message ids and an id checksum of a table, for the load's output check.
    A process of its own: counting 50M distinct ids takes more memory than the load itself,
    and it is no part of what the load's peak RSS should show."""
    import duckdb

    with duckdb.connect(params["database"], read_only=True) as con:
        rows, ids, checksum = con.execute(
            baseline.IDS_SUMMARY.format(column="message_id", table=params["table"])
        ).fetchone()
    return {"seconds": 0.0, "rows": rows, "ids": ids, "checksum": checksum}


def checks_only_load(params: dict[str, Any]) -> dict[str, Any]:
    """The load's floor while it keeps what the baseline drops: Sluice's own SQL (every line
    numbered, checked against the contract, rejected lines kept with their reason), in the
    same batches, inserting straight into a DuckDB file: no dlt, no Parquet hop, no state."""
    import duckdb

    from ingestion.landing import queries
    from ingestion.landing.helpers import batches, read_lines
    from ingestion.landing.settings import BATCH_BYTES, STAGING_MEMORY_LIMIT

    files = [(Path(f), Path(f).name) for f in params["files"]]
    database = Path(params["database"])
    events = ", ".join(f'"{name}" {kind}' for name, kind in queries.RAW_EVENTS_COLUMNS.items())
    rejected = ", ".join(f'"{name}" {kind}' for name, kind in queries.RAW_REJECTED_COLUMNS.items())
    started = time.perf_counter()
    con = duckdb.connect()
    try:
        con.execute("set TimeZone = 'UTC'")
        con.execute(f"set memory_limit = '{STAGING_MEMORY_LIMIT}'")
        con.execute("set preserve_insertion_order = false")
        con.execute(f"attach '{database}' as floor")
        con.execute(f"create table floor.raw_events ({events})")
        con.execute(f"create table floor.raw_rejected ({rejected})")
        for batch in batches(files, BATCH_BYTES):
            read_lines(con, batch)
            con.execute(queries.VALIDATE_SQL)
            loaded_at = {"loaded_at": dt.datetime.now(dt.UTC)}
            con.execute(f"insert into floor.raw_events {queries.ACCEPTED_SQL}", loaded_at)
            con.execute(f"insert into floor.raw_rejected {queries.REJECTED_SQL}", loaded_at)
        con.execute("detach floor")
        seconds = time.perf_counter() - started
    finally:
        con.close()
    return {"seconds": seconds}


def baseline_load(params: dict[str, Any]) -> dict[str, Any]:
    return baseline.load(params["files"], Path(params["database"]))


def baseline_marts(params: dict[str, Any]) -> dict[str, Any]:
    return baseline.marts(params["files"], Path(params["database"]))


def sluice_materialize(params: dict[str, Any]) -> dict[str, Any]:
    """Landing to marts through Dagster: ``sluice materialize --start .. --end ..`` (``job``:
    another job over the range, ``build`` say; ``steps``: also report each step's seconds)."""
    from common.settings import load_settings
    from orchestration.prepare import prepare
    from sluice.runs import materialize_range

    settings = load_settings()
    prepare(settings)  # what `make` does before any command: not part of the run
    started = time.perf_counter()
    outcome = materialize_range(
        settings,
        dt.date.fromisoformat(params["first"]),
        dt.date.fromisoformat(params["last"]),
        params.get("job", "elt"),
    )
    seconds = time.perf_counter() - started
    if not outcome.success:
        raise RuntimeError(f"materialize failed: {outcome.message}")
    result: dict[str, Any] = {"seconds": seconds, "run_id": outcome.run_id}
    if params.get("steps"):
        result["steps"] = _step_seconds(settings, outcome.run_id)
    return result


def _step_seconds(settings: Any, run_id: str) -> dict[str, float]:
    """Seconds of each step of a finished run (the load, the dbt build, the snapshot), from
    the data directory's Dagster instance: read after the run, outside its timing."""
    import dagster as dg

    instance = dg.DagsterInstance.from_config(str(settings.dagster_home))
    try:
        return {
            stat.step_key: stat.end_time - stat.start_time
            for stat in instance.get_run_step_stats(run_id)
            if stat.start_time is not None and stat.end_time is not None
        }
    finally:
        instance.dispose()


TASKS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "generate": generate,
    "copy_files": copy_files,
    "sluice_load": sluice_load,
    "baseline_load": baseline_load,
    "checks_only_load": checks_only_load,
    "id_summary": id_summary,
    "baseline_marts": baseline_marts,
    "sluice_materialize": sluice_materialize,
}


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in TASKS:
        print(f"usage: python -m bench.worker {{{','.join(TASKS)}}} JSON", file=sys.stderr)
        return 2
    result = TASKS[argv[0]](json.loads(argv[1]))
    sys.stdout.flush()
    print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
