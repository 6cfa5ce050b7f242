"""The dlt source that loads landing files into the warehouse's ``raw`` schema.

One resource, ``events``, walks the landing folder and loads each file exactly once: the
names of loaded files live in the resource's dlt state, which dlt commits together with the
data. Valid messages go to ``raw.events``; lines that break the event contract go to
``raw.rejected_events``. DuckDB writes the rows of each batch of files as Parquet into a
staging folder in the pipeline's working folder, and dlt imports those files as they are
(``dlt.mark.with_file_import``): the rows are never converted in Python nor written twice.
The source needs one argument, the landing folder; it reads no configuration of its own.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dlt
import pyarrow.parquet as pq
from dlt.common.schema.typing import TTableSchemaColumns
from dlt.pipeline.exceptions import CannotRestorePipelineException

from common.settings import RAW_EVENTS_TABLE, RAW_REJECTED_TABLE
from ingestion.landing import StagedFiles, batches, landing_files, stage_files

SOURCE_NAME = "landing"
# The resource whose dlt state lists the loaded files (see landing_file_contents).
FILES_RESOURCE = "landing_files"
EVENTS_TABLE = RAW_EVENTS_TABLE
REJECTED_TABLE = RAW_REJECTED_TABLE

EVENT_COLUMNS: TTableSchemaColumns = {
    "properties": {"data_type": "json"},
    "traits": {"data_type": "json"},
    "context": {"data_type": "json"},
}
# A batch of new files (or of a big file's lines) is parsed in one query; at its peak the
# load holds about 5x the batch in memory (1.3 GB for 256 MB of lines).
BATCH_BYTES = 256 << 20

# Where a load's Parquet files wait for dlt to import them, in the pipeline's working folder.
STAGING_FOLDER = "landing_staging"

REJECTED_COLUMNS: TTableSchemaColumns = {
    "reason": {"data_type": "text"},
    "raw_line": {"data_type": "text"},
}


@dataclass
class LoadReport:
    """What one load did; filled in while dlt extracts, read after the run."""

    files: list[str] = field(default_factory=list)
    skipped_files: int = 0
    loaded_rows: int = 0
    rejected_rows: int = 0
    events_by_date: dict[str, int] = field(default_factory=dict)
    rejected_by_reason: dict[str, int] = field(default_factory=dict)

    def add(self, staged: StagedFiles) -> None:
        # A big file spans consecutive batches; it is listed once.
        self.files.extend(name for name in staged.paths if self.files[-1:] != [name])
        self.loaded_rows += staged.accepted_rows
        self.rejected_rows += staged.rejected_rows
        for day, count in staged.events_by_date.items():
            self.events_by_date[day] = self.events_by_date.get(day, 0) + count
        for reason, count in staged.rejected_by_reason.items():
            self.rejected_by_reason[reason] = self.rejected_by_reason.get(reason, 0) + count


@dlt.source(name=SOURCE_NAME, max_table_nesting=0)
def landing_source(landing_dir: str, report: Any = None) -> Any:
    """Landing files under ``landing_dir``; ``report`` (a LoadReport) collects counts."""
    files = landing_file_contents(landing_dir, report if report is not None else LoadReport())
    return (
        files | events,
        files | rejected_events,
    )


def new_landing_files(landing_dir: Path, pipelines_dir: Path, pipeline_name: str) -> list[str]:
    """Names of the closed landing files that no load has taken yet, by the pipeline's local
    dlt state: read without opening the warehouse, so a sensor can ask while a run writes."""
    try:
        pipeline = dlt.attach(pipeline_name=pipeline_name, pipelines_dir=str(pipelines_dir))
        state: dict[str, Any] = dict(pipeline.state)
    except CannotRestorePipelineException:
        state = {}
    loaded = (
        state.get("sources", {})
        .get(SOURCE_NAME, {})
        .get("resources", {})
        .get(FILES_RESOURCE, {})
        .get("loaded_files", {})
    )
    names = (path.relative_to(landing_dir).as_posix() for path in landing_files(landing_dir))
    return [name for name in names if name not in loaded]


def _new_files(root: Path, loaded: dict[str, Any], report: LoadReport) -> list[tuple[Path, str]]:
    """Landing files (path, name) that no earlier load took."""
    new = []
    for path in landing_files(root):
        name = path.relative_to(root).as_posix()
        if name in loaded:
            report.skipped_files += 1
        else:
            new.append((path, name))
    return new


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
    for batch in batches(_new_files(root, loaded, report), BATCH_BYTES):
        staged = stage_files(batch, loaded_at, staging)
        for name, (rows, rejected) in staged.rows_by_file.items():
            # A big file spans several batches: its counts add up.
            entry = loaded.setdefault(name, {"loaded_at": loaded_at.isoformat()})
            entry["rows"] = entry.get("rows", 0) + rows
            entry["rejected"] = entry.get("rejected", 0) + rejected
        report.add(staged)
        yield staged


def _import(path: Path, rows: int) -> Any:
    """A staged Parquet file for dlt to take as is; its own schema gives the column types."""
    schema = pq.read_schema(path)
    if not rows:
        # An empty Arrow table still creates the table (an imported empty file does not).
        return schema.empty_table()
    return dlt.mark.with_file_import(str(path), "parquet", rows, hints=schema.empty_table())


@dlt.transformer(name=EVENTS_TABLE, write_disposition="append", columns=EVENT_COLUMNS)
def events(staged: StagedFiles) -> Iterator[Any]:
    """Messages that meet the event contract."""
    if staged.accepted_rows:
        yield _import(staged.accepted, staged.accepted_rows)


@dlt.transformer(name=REJECTED_TABLE, write_disposition="append", columns=REJECTED_COLUMNS)
def rejected_events(staged: StagedFiles) -> Iterator[Any]:
    """Lines that break the event contract, with file, line number and reason."""
    # Yielded even when empty, so the table exists from the first load on and the models
    # that read it work before any line was ever rejected.
    yield _import(staged.rejected, staged.rejected_rows)
