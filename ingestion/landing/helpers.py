"""The landing loader's work outside dlt: find the landing files, batch them, and stage
their lines, checked against the event contract, as Parquet files for dlt to import.

``stage_files`` runs the SQL of ``queries`` in an in-memory DuckDB (never the warehouse) and
has DuckDB write the rows straight to Parquet; tests and tools can take Arrow tables
(``parse_files``). A line that breaks the contract becomes a rejected row with the file, line
number, reason and raw text; the valid lines of the same file are kept.
``new_landing_files`` tells a sensor which files no load has taken yet, from dlt's local
state of the engine's pipeline (``ingestion.pipeline.pipeline_name``). On the lake (dlt's
filesystem destination, the Spark engine; ``on_lake``) the accepted rows also carry their
``event_date`` and go into a Delta table partitioned by it. Reads no environment.
"""

from __future__ import annotations

import contextlib
import re
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dlt
import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from dlt.common.libs.pyarrow import py_arrow_to_table_schema_columns
from dlt.common.schema.typing import TTableSchemaColumns
from dlt.pipeline.exceptions import CannotRestorePipelineException

from common.contract import LANDING_SUFFIX, valid_utf8
from ingestion.landing import queries
from ingestion.landing.settings import (
    FILES_RESOURCE,
    FILES_SOURCE,
    SOURCE_NAME,
    SOURCES_FOLDER,
    STAGING_MEMORY_LIMIT,
)

# Characters that DuckDB's file readers take as a glob pattern.
_GLOB = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class ParsedFiles:
    """The accepted and rejected rows of some landing files, as Arrow tables."""

    paths: list[str]
    accepted: pa.Table
    rejected: pa.Table
    events_by_date: dict[str, int]
    # source_file -> (accepted rows, rejected rows); every parsed file has an entry.
    rows_by_file: dict[str, tuple[int, int]]


@dataclass(frozen=True)
class StagedFiles:
    """The accepted and rejected rows of some landing files, written as Parquet files."""

    paths: list[str]
    accepted: Path
    accepted_rows: int
    rejected: Path
    rejected_rows: int
    events_by_date: dict[str, int]
    rows_by_file: dict[str, tuple[int, int]]
    # Reason with quoted values elided -> rows, for counts that do not explode.
    rejected_by_reason: dict[str, int]


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


def source_of(source_file: str) -> str:
    """The source a landing file belongs to: ``sources/<name>/...`` is ``name``, else ``files``.

    Writers that know their sender (the ingest API knows each write key's source) put files
    under ``sources/<name>/``; batch drops anywhere else are the ``files`` source.
    """
    parts = source_file.split("/")
    if len(parts) >= 3 and parts[0] == SOURCES_FOLDER and parts[1]:
        return parts[1]
    return FILES_SOURCE


@dataclass(frozen=True)
class Piece:
    """Part of a batch: a whole landing file that DuckDB reads itself (``data`` is None), or
    a run of whole lines of a big file, read here, starting at line ``first_line``."""

    path: Path
    source_file: str
    data: bytes | None = None
    first_line: int = 1


def _chunks(path: Path, source_file: str, chunk_bytes: int) -> Iterator[Piece]:
    """A big file as runs of whole lines of about ``chunk_bytes`` each, read one at a time."""
    first_line = 1
    with path.open("rb") as file:
        while data := file.read(chunk_bytes):
            if not data.endswith(b"\n"):
                data += file.readline()
            yield Piece(path, source_file, valid_utf8(data), first_line)
            first_line += data.count(b"\n")


def batches(files: list[tuple[Path, str]], batch_bytes: int) -> Iterator[list[Piece]]:
    """Files (path, name) grouped into batches of about ``batch_bytes``, in order.

    A batch is what one query parses at once; a file bigger than a batch is cut into runs of
    lines, one batch each, so a load's memory follows the batch size, not the biggest file.
    """
    batch: list[Piece] = []
    size = 0
    for path, name in files:
        file_bytes = path.stat().st_size
        if file_bytes > batch_bytes:
            if batch:
                yield batch
                batch, size = [], 0
            for piece in _chunks(path, name, batch_bytes):
                yield [piece]
            continue
        batch.append(Piece(path, name))
        size += file_bytes
        if size >= batch_bytes:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def read_lines(con: duckdb.DuckDBPyConnection, pieces: list[Piece]) -> None:
    """Fill the temp table ``lines`` (source, source_file, line_number, raw_line).

    DuckDB reads and splits whole files itself, in parallel and without a Python object per
    line. A file with bytes that are not UTF-8 (DuckDB refuses it) or a name that DuckDB
    would take as a glob pattern is read here instead, like the runs of a big file.
    """
    con.execute(queries.CREATE_LINES_SQL)
    whole = [piece for piece in pieces if piece.data is None]
    if whole and not any(_GLOB.search(str(piece.path)) for piece in whole):
        params = {
            "paths": [str(piece.path) for piece in whole],
            "names": [piece.source_file for piece in whole],
            "sources": [source_of(piece.source_file) for piece in whole],
        }
        try:
            con.execute(queries.READ_FILES_SQL, params)
            whole = []
        except duckdb.InvalidInputException:
            pass  # nothing was inserted: the statement failed as a whole
    read_here = [piece for piece in pieces if piece.data is not None]
    read_here += [Piece(p.path, p.source_file, valid_utf8(p.path.read_bytes())) for p in whole]
    if read_here:
        texts = pa.table(
            {
                "source": pa.array([source_of(p.source_file) for p in read_here], pa.string()),
                "source_file": pa.array([p.source_file for p in read_here], pa.string()),
                "first_line": pa.array([p.first_line for p in read_here], pa.int64()),
                "text": pa.chunked_array([_binary(p.data or b"") for p in read_here]),
            }
        )
        con.register("texts", texts)
        con.execute(queries.READ_TEXTS_SQL)
        con.unregister("texts")


def _binary(data: bytes) -> pa.Array:
    """``data`` as a one-value Arrow binary array, without copying it."""
    offsets = pa.array([0, len(data)], pa.int64()).buffers()[1]
    return pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), 1, [None, offsets, pa.py_buffer(data)]
    )


@contextlib.contextmanager
def _checked(pieces: list[Piece]) -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory DuckDB holding the temp table ``checked``: every line and its verdict."""
    con = duckdb.connect()
    try:
        con.execute("set TimeZone = 'UTC'")
        con.execute(f"set memory_limit = '{STAGING_MEMORY_LIMIT}'")
        # Rows carry their file and line number, so their order in a table or a Parquet file
        # says nothing; without it DuckDB splits lines, builds tables and writes in parallel.
        con.execute("set preserve_insertion_order = false")
        read_lines(con, pieces)
        con.execute(queries.VALIDATE_SQL)
        yield con
    finally:
        con.close()


def _summary(
    con: duckdb.DuckDBPyConnection, names: list[str]
) -> tuple[dict[str, int], dict[str, tuple[int, int]]]:
    dates = {day: int(n) for day, n in con.execute(queries.DATES_SQL).fetchall()}
    counts = {
        name: (int(ok), int(bad)) for name, ok, bad in con.execute(queries.COUNTS_SQL).fetchall()
    }
    return dates, {name: counts.get(name, (0, 0)) for name in names}


def parse_files(files: list[tuple[Path, str]], loaded_at: object) -> ParsedFiles:
    """Validate every line of some landing files (path, name) against the event contract.

    All files go through one query: a DuckDB connection and its plan cost about as much as
    parsing a small file, so a load parses its new files in a few large batches.
    """
    names = [name for _, name in files]
    params = {"loaded_at": loaded_at}
    with _checked([Piece(path, name) for path, name in files]) as con:
        accepted = con.sql(queries.ACCEPTED_SQL, params=params).to_arrow_table()
        rejected = con.sql(queries.REJECTED_SQL, params=params).to_arrow_table()
        dates, rows = _summary(con, names)
    return ParsedFiles(names, accepted, rejected, dates, rows)


def parse_file(path: Path, source_file: str, loaded_at: object) -> ParsedFiles:
    """Validate every line of one landing file against the event contract."""
    return parse_files([(path, source_file)], loaded_at)


def stage_files(
    pieces: list[Piece], loaded_at: object, out_dir: Path, event_date: bool = False
) -> StagedFiles:
    """Validate a batch (see ``batches``); DuckDB writes the rows to Parquet files in ``out_dir``.

    This is the loader's path: no Arrow table is handed to Python, and dlt imports the files
    as they are (a hard link) instead of writing the rows again. With ``event_date`` the
    accepted rows get the column the lake partitions them by (``queries.EVENT_DATE``).
    """
    names = list(dict.fromkeys(piece.source_file for piece in pieces))
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = uuid.uuid4().hex
    accepted_path = out_dir / f"{stem}-events.parquet"
    rejected_path = out_dir / f"{stem}-rejected.parquet"
    params = {"loaded_at": loaded_at}
    with _checked(pieces) as con:
        # Without this DuckDB marks a column NOT NULL in a file where it saw no null, and dlt
        # rewrites every file whose nullability differs from the table's.
        con.execute("set disabled_optimizers = 'statistics_propagation'")
        accepted_sql = queries.ACCEPTED_WITH_EVENT_DATE_SQL if event_date else queries.ACCEPTED_SQL
        con.execute(f"copy ({accepted_sql}) to '{accepted_path}' (format parquet)", params)
        con.execute(f"copy ({queries.REJECTED_SQL}) to '{rejected_path}' (format parquet)", params)
        dates, rows = _summary(con, names)
        reasons = {reason: int(n) for reason, n in con.execute(queries.REASONS_SQL).fetchall()}
    accepted_rows = sum(ok for ok, _ in rows.values())
    rejected_rows = sum(bad for _, bad in rows.values())
    return StagedFiles(
        names, accepted_path, accepted_rows, rejected_path, rejected_rows, dates, rows, reasons
    )


def landing_files(landing_dir: Path) -> list[Path]:
    """Closed landing files, oldest name first; files still being written end in .tmp."""
    if not landing_dir.is_dir():
        return []
    return sorted(p for p in landing_dir.rglob(f"*{LANDING_SUFFIX}") if p.is_file())


_ATTACH_LOCK = threading.Lock()


def loaded_landing_files(pipelines_dir: Path, pipeline_name: str) -> dict[str, dict[str, Any]]:
    """The landing files loads have taken (name -> ``loaded_at``, rows, rejected), by the
    pipeline's local dlt state: read without opening the warehouse, so a sensor can ask while
    a run writes. Empty before the first load (or while a failed load's state is reset).

    dlt's ``attach`` makes the pipeline's folders when they are missing and removes them
    again when there is no state to restore: two readers in one process (the ingest API's
    ``/metrics`` and the monitoring collector) racing on a missing folder failed with
    FileNotFoundError. So a missing folder reads as empty without asking dlt, and readers in
    one process take turns."""
    if not (pipelines_dir / pipeline_name).is_dir():
        return {}
    try:
        with _ATTACH_LOCK:
            pipeline = dlt.attach(pipeline_name=pipeline_name, pipelines_dir=str(pipelines_dir))
            state: dict[str, Any] = dict(pipeline.state)
    except (CannotRestorePipelineException, FileNotFoundError):
        # No state yet, or a load is resetting the folder (ingestion.pipeline) right now.
        state = {}
    return dict(
        state.get("sources", {})
        .get(SOURCE_NAME, {})
        .get("resources", {})
        .get(FILES_RESOURCE, {})
        .get("loaded_files", {})
    )


def new_landing_files(landing_dir: Path, pipelines_dir: Path, pipeline_name: str) -> list[str]:
    """Names of the closed landing files that no load has taken yet."""
    loaded = loaded_landing_files(pipelines_dir, pipeline_name)
    names = (path.relative_to(landing_dir).as_posix() for path in landing_files(landing_dir))
    return [name for name in names if name not in loaded]


def new_files(root: Path, loaded: dict[str, Any], report: LoadReport) -> list[tuple[Path, str]]:
    """Landing files (path, name) that no earlier load took."""
    new = []
    for path in landing_files(root):
        name = path.relative_to(root).as_posix()
        if name in loaded:
            report.skipped_files += 1
        else:
            new.append((path, name))
    return new


def on_lake() -> bool:
    """Whether the running pipeline writes to the lake (dlt's filesystem destination, the
    Spark engine's, ``ingestion.pipeline``) rather than into the DuckDB warehouse."""
    destination = dlt.current.pipeline().destination
    return destination is not None and destination.destination_name == "filesystem"


def import_staged(
    path: Path,
    rows: int,
    partition_by: str | None = None,
    columns: TTableSchemaColumns | None = None,
) -> Any:
    """A staged Parquet file for dlt to take as is; its own schema gives the column types.

    With ``partition_by`` the table is a Delta table partitioned by that column: on dlt's
    filesystem destination only table formats write partition folders. dlt imports the staged
    file into it as well (its Delta job reads the package's Parquet files with Arrow).
    ``columns`` are the resource's own column hints, kept over the file's types."""
    schema = pq.read_schema(path)
    if not rows:
        # An empty Arrow table still creates the table (an imported empty file does not).
        return schema.empty_table()
    if partition_by is None:
        return dlt.mark.with_file_import(str(path), "parquet", rows, hints=schema.empty_table())
    # The hints are a dlt table schema here (with_file_import takes an Arrow table or hints,
    # not both), so the column types come from the file's schema through dlt's own mapping.
    table = py_arrow_to_table_schema_columns(schema)
    for name, hint in (columns or {}).items():
        table[name] = {**table[name], **hint}
    table[partition_by]["partition"] = True
    hints = dlt.mark.make_hints(table_format="delta", columns=table)
    return dlt.mark.with_file_import(str(path), "parquet", rows, hints=hints)
