"""The dlt source that loads landing files into the warehouse's ``raw`` schema.

One resource, ``landing_files``, walks the landing folder and loads each file exactly once:
the names of loaded files live in the resource's dlt state, which the destination takes at
the end of the same load (a crash in between can load a file twice: see
``ingestion.pipeline``). Valid messages go to ``raw.events``; lines that break the event
contract (``common.contract``) go to ``raw.rejected_events``. DuckDB writes the rows of each
batch of files as Parquet into a staging folder in the pipeline's working folder, and dlt imports
those files as they are (``dlt.mark.with_file_import``): the rows are never converted in
Python nor written twice. The source takes the shape of the destination it runs into: on the
lake (dlt's filesystem destination, the Spark engine) the events also carry ``event_date``
and form a Delta table partitioned by it, and the rejected lines are plain Parquet files.

The source needs one argument, the landing folder, and reads no configuration of its own.
Its constants are in ``settings`` (``LANDING_SUFFIX``, ``SOURCES_FOLDER``, ``FILES_SOURCE``,
``BATCH_BYTES``, ``STAGING_MEMORY_LIMIT``, ``STAGING_FOLDER``, the source, resource and table
names); file discovery, batching and staging in ``helpers``; the SQL and the raw tables'
columns in ``queries``.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dlt
from dlt.common.schema.typing import TTableSchemaColumns

from ingestion.landing.helpers import (
    LoadReport,
    StagedFiles,
    batches,
    import_staged,
    new_files,
    on_lake,
    stage_files,
)
from ingestion.landing.queries import EVENT_DATE_COLUMN, RAW_EVENTS_COLUMNS
from ingestion.landing.settings import (
    BATCH_BYTES,
    EVENTS_TABLE,
    FILES_RESOURCE,
    REJECTED_TABLE,
    SOURCE_NAME,
    STAGING_FOLDER,
)

# The staged files hold JSON as text; dlt makes these columns JSON in the warehouse.
EVENT_HINTS: TTableSchemaColumns = {
    name: {"data_type": "json"} for name, kind in RAW_EVENTS_COLUMNS.items() if kind == "json"
}
REJECTED_HINTS: TTableSchemaColumns = {
    "reason": {"data_type": "text"},
    "raw_line": {"data_type": "text"},
}


@dlt.source(name=SOURCE_NAME, max_table_nesting=0)
def landing_source(landing_dir: str, report: Any = None) -> Any:
    """Landing files under ``landing_dir``; ``report`` (a LoadReport) collects counts."""
    files = landing_file_contents(landing_dir, report if report is not None else LoadReport())
    return (
        files | events,
        files | rejected_events,
    )


@dlt.resource(name=FILES_RESOURCE, selected=False)
def landing_file_contents(landing_dir: str, report: LoadReport) -> Iterator[StagedFiles]:
    """Landing files not loaded before, parsed once in batches and shared by both tables."""
    root = Path(landing_dir)
    loaded: dict[str, Any] = dlt.current.resource_state().setdefault("loaded_files", {})
    loaded_at = dt.datetime.now(dt.UTC)
    # dlt hard-links the staged files into its load package; what an earlier load left
    # behind here is already in the warehouse or in that package.
    staging = Path(dlt.current.pipeline().working_dir) / STAGING_FOLDER
    shutil.rmtree(staging, ignore_errors=True)
    event_date = on_lake()
    for batch in batches(new_files(root, loaded, report), BATCH_BYTES):
        staged = stage_files(batch, loaded_at, staging, event_date=event_date)
        for name, (rows, rejected) in staged.rows_by_file.items():
            # A big file spans several batches: its counts add up.
            entry = loaded.setdefault(name, {"loaded_at": loaded_at.isoformat()})
            entry["rows"] = entry.get("rows", 0) + rows
            entry["rejected"] = entry.get("rejected", 0) + rejected
        report.add(staged)
        yield staged


@dlt.transformer(name=EVENTS_TABLE, write_disposition="append", columns=EVENT_HINTS)
def events(staged: StagedFiles) -> Iterator[Any]:
    """Messages that meet the event contract."""
    if not staged.accepted_rows:
        return
    if on_lake():
        yield import_staged(
            staged.accepted, staged.accepted_rows, EVENT_DATE_COLUMN, columns=EVENT_HINTS
        )
    else:
        yield import_staged(staged.accepted, staged.accepted_rows)


@dlt.transformer(name=REJECTED_TABLE, write_disposition="append", columns=REJECTED_HINTS)
def rejected_events(staged: StagedFiles) -> Iterator[Any]:
    """Lines that break the event contract, with file, line number and reason."""
    # Yielded even when empty, so the table exists from the first load on and the models
    # that read it work before any line was ever rejected.
    yield import_staged(staged.rejected, staged.rejected_rows)
