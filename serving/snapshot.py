"""The serving snapshot: a read-only copy of the marts for BI tools, reports and notebooks.

DuckDB lets one process write a file, and a reader of the warehouse would block the pipeline
(and be blocked by it). So readers never open the warehouse: after each successful build the
pipeline copies the marts into a NEW DuckDB file beside the snapshot, records what it holds
in ``sluice_meta``, and renames it over the old one (``common.durable``: the file fsynced,
renamed, its folder fsynced). A reader that opens the snapshot gets either the old file or the
new one, always complete, also after a crash, and holds no lock the pipeline waits for. The
file is written in DuckDB's storage format v1.0.0, which the DuckDB 1.x clients bundled in BI
tools can open.

The same tables are also exported as Parquet, for tools that read files rather than DuckDB:
``<parquet dir>/<version>/<schema>/<table>/`` (Hive-partitioned by ``event_date`` when the
table has that column), and a ``current`` symlink that is swapped to each new version. The
version folder is on disk (every file and folder fsynced) before it is renamed into place, and
the link is swapped the same durable way.

The marts come from the DuckDB warehouse (``publish_snapshot``) or, on the Spark engine, from
the Parquet folders Spark keeps its tables in (``publish_snapshot_from_parquet``: DuckDB reads
the files, Hive partition folders included, and casts each column to the type the caller
gives, in the caller's order, so both engines publish the same tables). Either way one writer
(``_copy_tables``) writes the file, its ``sluice_meta`` and the same durable swap.

Reads nothing from the environment: callers pass the paths (``Settings.warehouse_path`` and
``Settings.serving_path``), or the tables' folders and columns.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb

from common.durable import fsync_path, replace_durably, temporary_beside

# The oldest storage format DuckDB 2.x can write; DuckDB 1.0 and later open it.
STORAGE_VERSION = "v1.0.0"
META_SCHEMA = "sluice_meta"
VERSION_TABLE = "snapshot_version"
TABLES_TABLE = "snapshot_tables"


class SnapshotMissing(FileNotFoundError):
    """No snapshot has been published yet; the message says how to publish one."""


@dataclass(frozen=True)
class SnapshotVersion:
    """What one published snapshot holds."""

    run_id: str
    built_at: dt.datetime
    row_counts: dict[str, int]  # "marts.dau" -> rows


def _literal_text(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _literal(path: Path) -> str:
    return _literal_text(str(path))


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# Each table the snapshot copies: (schema, table, a query of its rows on the connection).
Sources = list[tuple[str, str, str]]


def _copy_tables(
    target: Path, run_id: str, sources: Callable[[duckdb.DuckDBPyConnection], Sources]
) -> SnapshotVersion:
    """Write the snapshot file: every table ``sources`` lists (it may attach what its queries
    read), then ``sluice_meta``."""
    built_at = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    counts: dict[str, int] = {}
    with duckdb.connect() as con:
        con.execute(f"attach {_literal(target)} as snap (storage_version '{STORAGE_VERSION}')")
        for schema, table, query in sources(con):
            name = f"{_quoted(schema)}.{_quoted(table)}"
            con.execute(f"create schema if not exists snap.{_quoted(schema)}")
            con.execute(f"create table snap.{name} as {query}")
            row = con.execute(f"select count(*) from snap.{name}").fetchone()
            counts[f"{schema}.{table}"] = int(row[0]) if row else 0
        con.execute(f"create schema snap.{META_SCHEMA}")
        con.execute(
            f"create table snap.{META_SCHEMA}.{VERSION_TABLE} "
            "(run_id varchar not null, built_at timestamp not null)"
        )
        con.execute(
            f"insert into snap.{META_SCHEMA}.{VERSION_TABLE} values (?, ?)", [run_id, built_at]
        )
        con.execute(
            f"create table snap.{META_SCHEMA}.{TABLES_TABLE} "
            "(table_schema varchar not null, table_name varchar not null, "
            "row_count bigint not null)"
        )
        for qualified, rows in counts.items():
            schema, table = qualified.split(".", 1)
            con.execute(
                f"insert into snap.{META_SCHEMA}.{TABLES_TABLE} values (?, ?, ?)",
                [schema, table, rows],
            )
        # Everything into the main file now: a leftover .wal would not travel with the rename.
        con.execute("checkpoint snap")
        con.execute("detach snap")
    return SnapshotVersion(run_id=run_id, built_at=built_at, row_counts=counts)


def _publish(
    target: Path, run_id: str, sources: Callable[[duckdb.DuckDBPyConnection], Sources]
) -> SnapshotVersion:
    """Write the snapshot into a new file beside ``target``, then swap it in."""
    with temporary_beside(target, suffix=".partial") as partial:
        wal = partial.with_name(partial.name + ".wal")
        try:
            version = _copy_tables(partial, run_id, sources)
            # DuckDB wrote the file, not a handle of ours: on disk before the rename.
            fsync_path(partial)
            replace_durably(partial, target)
        finally:
            wal.unlink(missing_ok=True)
    return version


def publish_snapshot(
    warehouse: Path, target: Path, run_id: str, schemas: Sequence[str] = ("marts",)
) -> SnapshotVersion:
    """Copy every table of ``schemas`` from the warehouse into a new file, then swap it in."""
    if not warehouse.exists():
        raise FileNotFoundError(
            f"no warehouse at {warehouse}; build the marts first (`sluice materialize`)"
        )

    def sources(con: duckdb.DuckDBPyConnection) -> Sources:
        con.execute(f"attach {_literal(warehouse)} as warehouse (read_only)")
        tables = con.execute(
            "select schema_name, table_name from duckdb_tables() "
            "where database_name = 'warehouse' and list_contains(?, schema_name) "
            "order by all",
            [list(schemas)],
        ).fetchall()
        return [
            (schema, table, f"select * from warehouse.{_quoted(schema)}.{_quoted(table)}")
            for schema, table in tables
        ]

    return _publish(target, run_id, sources)


# The folder name Hive and Spark give the partition of a null value.
HIVE_NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"
_TYPE = re.compile(r"[A-Za-z][A-Za-z0-9_ ]*(\([0-9, ]+\))?")


@dataclass(frozen=True)
class ParquetTable:
    """A table kept as Parquet files under a folder, as Spark keeps its tables: what the
    snapshot copies from it."""

    schema: str
    name: str
    location: Path
    # (column, SQL type) in the order the snapshot keeps. Each value is cast to the type, so
    # a type both engines' contracts declare gives the column DuckDB's engine gives it.
    columns: tuple[tuple[str, str], ...]
    # The Hive partition columns (folders ``<column>=<value>/``, outermost first); their
    # values come from the folder names, not the files.
    partition_columns: tuple[str, ...] = ()


def parquet_files(table: ParquetTable) -> list[Path]:
    """The table's data files: ``*.parquet`` in the folders of its partition columns, leaving
    out hidden and underscore names (Spark's ``_SUCCESS``, ``.crc`` checksums, the
    ``_temporary`` and ``.spark-staging-*`` folders of a write under way)."""
    pattern = "/".join([*(f"{column}=*" for column in table.partition_columns), "*.parquet"])
    return sorted(
        path
        for path in table.location.glob(pattern)
        if path.is_file()
        and not any(part.startswith((".", "_")) for part in path.relative_to(table.location).parts)
    )


def _parquet_query(table: ParquetTable) -> str:
    """A query of the table's rows in its column order and types; no rows without files."""
    for column, kind in table.columns:
        if not _TYPE.fullmatch(kind):
            raise ValueError(f"{table.schema}.{table.name}.{column}: {kind!r} is not a SQL type")
    unknown = set(table.partition_columns) - {column for column, _ in table.columns}
    if unknown:
        raise ValueError(
            f"{table.schema}.{table.name}: partition columns {sorted(unknown)} are not among "
            "its columns"
        )
    files = parquet_files(table)
    values = []
    for column, kind in table.columns:
        value = _quoted(column)
        if not files:
            value = "null"
        elif column in table.partition_columns:
            value = f"nullif({value}, '{HIVE_NULL_PARTITION}')"
        values.append(f"cast({value} as {kind}) as {_quoted(column)}")
    if not files:
        return f"select {', '.join(values)} where false"
    paths = ", ".join(_literal(path) for path in files)
    if table.partition_columns:
        # Partition values read as text and cast like the other columns: DuckDB's own guess
        # would make a day folder a DATE but a numeric one a BIGINT whatever the contract says.
        types = ", ".join(f"{_literal_text(c)}: 'varchar'" for c in table.partition_columns)
        options = f"hive_partitioning = true, hive_types = {{{types}}}"
    else:
        options = "hive_partitioning = false"
    return f"select {', '.join(values)} from read_parquet([{paths}], {options})"


def publish_snapshot_from_parquet(
    tables: Sequence[ParquetTable], target: Path, run_id: str
) -> SnapshotVersion:
    """Copy each Parquet table into a new snapshot file, then swap it in: the same file,
    tables and ``sluice_meta`` that ``publish_snapshot`` writes from a DuckDB warehouse."""
    for table in tables:
        if not table.location.is_dir():
            raise FileNotFoundError(
                f"{table.schema}.{table.name}: no folder at {table.location}; build the marts "
                "first (`sluice materialize`)"
            )
    ordered = sorted(tables, key=lambda table: (table.schema, table.name))
    return _publish(
        target,
        run_id,
        lambda _con: [(t.schema, t.name, _parquet_query(t)) for t in ordered],
    )


PARTITION_COLUMN = "event_date"
CURRENT_LINK = "current"


def publish_parquet(snapshot: Path, out_dir: Path, version: SnapshotVersion, keep: int = 2) -> Path:
    """Export the snapshot's tables as Parquet into a new version folder, then point
    ``current`` at it; only the ``keep`` newest versions stay, so a reader of the previous
    one has a whole publish interval to finish."""
    name = f"{version.built_at:%Y%m%dT%H%M%S}-{version.run_id[:8]}"
    target = out_dir / name
    with temporary_beside(target, suffix=".partial") as partial:
        partial.mkdir()
        try:
            _export_parquet(snapshot, version, partial)
            _fsync_tree(partial)
            replace_durably(partial, target)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    with temporary_beside(out_dir / CURRENT_LINK, suffix=".partial") as link:
        link.symlink_to(name)
        replace_durably(link, out_dir / CURRENT_LINK)
    versions = sorted(p for p in out_dir.iterdir() if p.is_dir() and not p.is_symlink())
    for old in versions[:-keep]:
        if old.name != name and not old.name.startswith("."):
            shutil.rmtree(old, ignore_errors=True)
    return out_dir / CURRENT_LINK


def _export_parquet(snapshot: Path, version: SnapshotVersion, folder: Path) -> None:
    """Each table of the snapshot as Parquet under ``folder/<schema>/<table>/``."""
    with duckdb.connect(str(snapshot), read_only=True) as con:
        for qualified in version.row_counts:
            schema, table = qualified.split(".", 1)
            columns = {
                row[0]
                for row in con.execute(
                    "select column_name from duckdb_columns() "
                    "where schema_name = ? and table_name = ?",
                    [schema, table],
                ).fetchall()
            }
            table_folder = folder / schema / table
            table_folder.parent.mkdir(parents=True, exist_ok=True)
            source = f"select * from {_quoted(schema)}.{_quoted(table)}"
            if PARTITION_COLUMN in columns:
                options = f"format parquet, partition_by ({PARTITION_COLUMN})"
                con.execute(f"copy ({source}) to {_literal(table_folder)} ({options})")
            else:
                table_folder.mkdir()
                con.execute(f"copy ({source}) to {_literal(table_folder / 'data.parquet')}")


def _fsync_tree(folder: Path) -> None:
    """fsync every file below ``folder``, then each folder, deepest first: DuckDB wrote them
    through handles of its own, and a folder's entries must outlive a crash as its files do."""
    for root, _folders, files in os.walk(folder, topdown=False):
        for name in files:
            fsync_path(Path(root) / name)
        fsync_path(Path(root))


def connect_snapshot(path: Path) -> duckdb.DuckDBPyConnection:
    """A read-only connection to the snapshot; it never waits for or blocks the pipeline."""
    if not path.exists():
        raise SnapshotMissing(
            f"no serving snapshot at {path}; it is published after each build "
            "(run `sluice materialize --start D1 --end D2`)"
        )
    return duckdb.connect(str(path), read_only=True)


def read_version(con: duckdb.DuckDBPyConnection) -> SnapshotVersion:
    """The version recorded in an open snapshot."""
    row = con.execute(f"select run_id, built_at from {META_SCHEMA}.{VERSION_TABLE}").fetchone()
    if row is None:
        raise ValueError(f"the snapshot has no row in {META_SCHEMA}.{VERSION_TABLE}")
    tables = con.execute(
        f"select table_schema, table_name, row_count from {META_SCHEMA}.{TABLES_TABLE} order by all"
    ).fetchall()
    counts = {f"{schema}.{table}": int(rows) for schema, table, rows in tables}
    return SnapshotVersion(run_id=row[0], built_at=row[1], row_counts=counts)
