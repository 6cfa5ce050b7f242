"""The dlt source that loads landing files into the warehouse's ``raw`` schema.

One resource, ``events``, walks the landing folder and loads each file exactly once: the
names of loaded files live in the resource's dlt state, which dlt commits together with the
data. Valid messages go to ``raw.events``; lines that break the event contract go to
``raw.rejected_events``. Rows travel as Arrow tables (dlt's fast Parquet path). The source
needs one argument, the landing folder; it reads no configuration of its own.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dlt
from dlt.common.schema.typing import TTableSchemaColumns

from ingestion.landing import ParsedFiles, landing_files, parse_files
from sluice.settings import RAW_EVENTS_TABLE, RAW_REJECTED_TABLE

EVENTS_TABLE = RAW_EVENTS_TABLE
REJECTED_TABLE = RAW_REJECTED_TABLE

EVENT_COLUMNS: TTableSchemaColumns = {
    "properties": {"data_type": "json"},
    "traits": {"data_type": "json"},
    "context": {"data_type": "json"},
}
# A batch of new files is parsed in one query; its Arrow tables take about 3x its bytes.
BATCH_BYTES = 256 << 20

# Reasons quote the offending value; counts group them without it.
_QUOTED = re.compile(r'"[^"]*"')

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

    def add(self, parsed: ParsedFiles) -> None:
        self.files.extend(parsed.paths)
        self.loaded_rows += parsed.accepted.num_rows
        self.rejected_rows += parsed.rejected.num_rows
        for day, count in parsed.events_by_date.items():
            self.events_by_date[day] = self.events_by_date.get(day, 0) + count
        for reason in parsed.rejected.column("reason").to_pylist():
            key = _QUOTED.sub('"..."', reason)
            self.rejected_by_reason[key] = self.rejected_by_reason.get(key, 0) + 1


@dlt.source(name="landing", max_table_nesting=0)
def landing_source(landing_dir: str, report: Any = None) -> Any:
    """Landing files under ``landing_dir``; ``report`` (a LoadReport) collects counts."""
    files = landing_file_contents(landing_dir, report if report is not None else LoadReport())
    return (
        files | events,
        files | rejected_events,
    )


def _batches(
    root: Path, loaded: dict[str, Any], report: LoadReport
) -> Iterator[list[tuple[Path, str]]]:
    """New files in groups of about BATCH_BYTES, so a load parses in a few large queries."""
    batch: list[tuple[Path, str]] = []
    size = 0
    for path in landing_files(root):
        name = path.relative_to(root).as_posix()
        if name in loaded:
            report.skipped_files += 1
            continue
        batch.append((path, name))
        size += path.stat().st_size
        if size >= BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


@dlt.resource(name="landing_files", selected=False)
def landing_file_contents(landing_dir: str, report: LoadReport) -> Iterator[ParsedFiles]:
    """Landing files not loaded before, parsed once in batches and shared by both tables."""
    root = Path(landing_dir)
    loaded: dict[str, Any] = dlt.current.resource_state().setdefault("loaded_files", {})
    loaded_at = dt.datetime.now(dt.UTC)
    for batch in _batches(root, loaded, report):
        parsed = parse_files(batch, loaded_at)
        for name, (rows, rejected) in parsed.rows_by_file.items():
            loaded[name] = {"loaded_at": loaded_at.isoformat(), "rows": rows, "rejected": rejected}
        report.add(parsed)
        yield parsed


@dlt.transformer(name=EVENTS_TABLE, write_disposition="append", columns=EVENT_COLUMNS)
def events(parsed: ParsedFiles) -> Iterator[Any]:
    """Messages that meet the event contract."""
    if parsed.accepted.num_rows:
        yield parsed.accepted


@dlt.transformer(name=REJECTED_TABLE, write_disposition="append", columns=REJECTED_COLUMNS)
def rejected_events(parsed: ParsedFiles) -> Iterator[Any]:
    """Lines that break the event contract, with file, line number and reason."""
    # Yielded even when empty, so the table exists from the first load on and the models
    # that read it work before any line was ever rejected.
    yield parsed.rejected
