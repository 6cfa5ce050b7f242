"""Compaction: rewrite the warehouse into a new DuckDB file and swap it in.

DuckDB reuses the blocks that deletes free but never gives them back to the file system, and
a delete that leaves a row group partly filled rewrites it. So after retention the file keeps
its size; a copy holds only the rows. ``compact`` checkpoints the warehouse, attaches it read
only beside a new file, copies the schema (``COPY FROM DATABASE ... (SCHEMA)``: schemas,
tables, views, sequences) and then every table's rows, those of ``horizons.TABLES`` in day
order, so each day sits in row groups of its own and the next retention frees whole row groups
(the load writes a batch of files unordered, mixing their days). Each table's row count is
compared before the new file is fsynced and renamed over the old one (``common.durable``):
after a crash the warehouse is the old file or the new one, whole.

No other process may have the warehouse open: the Dagster op holds the warehouse pool, and a
DuckDB CLI holding the file makes it fail before anything changed. Reads no environment; the
memory limit and threads are the dbt builds' (``SLUICE_DUCKDB_MEMORY_LIMIT``,
``SLUICE_DUCKDB_THREADS``), spilling to ``<warehouse>.tmp`` like them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from common.durable import fsync_path, replace_durably, temporary_beside
from common.settings import Settings
from orchestration.maintain.horizons import TABLES

_OLD = "warehouse"
_NEW = "compacted"


class CompactionError(RuntimeError):
    """The copy differs from the warehouse; the warehouse was left as it was."""


@dataclass(frozen=True)
class CompactionResult:
    bytes_before: int
    bytes_after: int
    seconds: float
    # schema.table -> rows, in the copy (equal to the warehouse's).
    rows: dict[str, int]

    @property
    def reclaimed(self) -> int:
        return self.bytes_before - self.bytes_after

    def as_json(self) -> dict[str, Any]:
        return {
            "bytes_before": self.bytes_before,
            "bytes_after": self.bytes_after,
            "bytes_reclaimed": self.reclaimed,
            "seconds": round(self.seconds, 3),
            "tables": len(self.rows),
            "rows": self.rows,
        }


def describe(report: dict[str, Any]) -> list[str]:
    """What a compaction did, in lines (from ``as_json``)."""
    mib = 2**20
    before, after = report["bytes_before"], report["bytes_after"]
    share = f" ({1 - after / before:.0%} smaller)" if before else ""
    return [
        f"warehouse: {before / mib:,.1f} MiB before, {after / mib:,.1f} MiB after{share}, "
        f"{report['tables']} tables copied in {report['seconds']:.1f} s"
    ]


def _literal(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _size(path: Path) -> int:
    wal = path.with_name(path.name + ".wal")
    return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def _copy(settings: Settings, source: Path, target: Path) -> dict[str, int]:
    order = {(t.schema, t.name): t.day for t in TABLES}
    config: dict[str, str | bool | int | float | list[str]] = {
        "memory_limit": settings.duckdb_memory_limit,
        "threads": settings.duckdb_threads,
        "temp_directory": str(source) + ".tmp",
    }
    rows: dict[str, int] = {}
    with duckdb.connect(config=config) as con:
        con.execute("set TimeZone = 'UTC'")
        con.execute(f"attach {_literal(source)} as {_OLD} (read_only)")
        con.execute(f"attach {_literal(target)} as {_NEW}")
        con.execute(f"copy from database {_OLD} to {_NEW} (schema)")
        tables = con.execute(
            "select schema_name, table_name from duckdb_tables() where database_name = ? "
            "order by all",
            [_OLD],
        ).fetchall()
        for schema, table in tables:
            name = f"{_quoted(schema)}.{_quoted(table)}"
            day = order.get((schema, table))
            con.execute(
                f"insert into {_NEW}.{name} select * from {_OLD}.{name}"
                + (f" order by {day}" if day else "")
            )
            counts = [
                con.execute(f"select count(*) from {db}.{name}").fetchone() for db in (_OLD, _NEW)
            ]
            if counts[0] != counts[1]:
                raise CompactionError(
                    f"{schema}.{table}: {counts[1]} rows in the copy, {counts[0]} in the warehouse;"
                    " the warehouse was left as it was"
                )
            rows[f"{schema}.{table}"] = int(counts[0][0]) if counts[0] else 0
        con.execute(f"checkpoint {_NEW}")
        con.execute(f"detach {_NEW}")
        con.execute(f"detach {_OLD}")
    return rows


def compact(settings: Settings) -> CompactionResult:
    """Rewrite the warehouse without its free blocks, tables in day order, and swap it in."""
    path = settings.warehouse_path
    if not path.exists():
        raise FileNotFoundError(f"no warehouse at {path}; nothing to compact")
    started = time.perf_counter()
    # Fold the WAL into the file, so the file alone is the database the copy reads.
    with duckdb.connect(str(path)) as con:
        con.execute("checkpoint")
    before = _size(path)
    with temporary_beside(path, suffix=".partial") as partial:
        wal = partial.with_name(partial.name + ".wal")
        try:
            rows = _copy(settings, path, partial)
            # DuckDB wrote the file, not a handle of ours: on disk before the rename.
            fsync_path(partial)
            replace_durably(partial, path)
        finally:
            wal.unlink(missing_ok=True)
    return CompactionResult(before, _size(path), time.perf_counter() - started, rows)
