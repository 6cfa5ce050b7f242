"""The snapshot published from Parquet folders, as the Spark engine keeps its tables, is the
snapshot published from a DuckDB warehouse holding the same tables: the same columns in the
same order and types, the same rows, the same ``sluice_meta``.

DuckDB writes the folders here (no Spark needed): one Hive partition folder per day, the
partition column only in the folder names, plus what Spark leaves beside its files (a
``_SUCCESS`` marker, ``.crc`` checksums, the hidden staging folder of a write under way),
which the snapshot must not read.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import duckdb
import yaml

from serving.snapshot import (
    ParquetTable,
    connect_snapshot,
    publish_parquet,
    publish_snapshot,
    publish_snapshot_from_parquet,
    read_version,
)
from tests.serving.fake_marts import CONTRACTS, SCHEMA, FakeMarts, build_warehouse

PARTITION = "event_date"
DAYS = 9
LAST = dt.date(2026, 3, 31)
# A partitioned table without a row: Spark keeps an empty folder.
EMPTY = "empty_daily"


def _contract_columns() -> dict[str, tuple[tuple[str, str], ...]]:
    """Each mart's columns and types as its dbt contract declares them (what the Spark engine's
    publish passes), in the contract's order."""
    models = yaml.safe_load(CONTRACTS.read_text())["models"]
    return {
        model["name"]: tuple((c["name"], c["data_type"]) for c in model["columns"])
        for model in models
        if "columns" in model
    }


def _write_like_spark(warehouse: Path, lake: Path) -> list[ParquetTable]:
    """Each table of the warehouse's marts as Parquet under ``lake/<table>/``, partitioned by
    day when it has a day column, with Spark's leftovers beside the files."""
    columns = _contract_columns()
    columns[EMPTY] = ((PARTITION, "date"), ("events", "bigint"))
    tables = []
    with duckdb.connect(str(warehouse), read_only=True) as con:
        names = [
            row[0]
            for row in con.execute(
                "select table_name from duckdb_tables() where schema_name = ? order by 1",
                [SCHEMA],
            ).fetchall()
        ]
        for name in names:
            folder = lake / name
            folder.mkdir(parents=True)
            partitioned = PARTITION in dict(columns[name])
            # Spark puts the partition column last, and only in the folder names.
            others = [f'"{c}"' for c, _ in columns[name] if c != PARTITION]
            last = [PARTITION] if partitioned else []
            source = f"select {', '.join(others + last)} from {SCHEMA}.{name}"
            if partitioned:
                con.execute(
                    f"copy ({source}) to '{folder}' (format parquet, partition_by ({PARTITION}),"
                    " overwrite_or_ignore, filename_pattern 'part-{i}')"
                )
                # Writes under way (a staging folder, a hidden file): never read.
                staging = folder / ".spark-staging-0" / f"{PARTITION}={LAST}"
                staging.mkdir(parents=True)
                con.execute(f"copy ({source}) to '{staging / 'part-00000.parquet'}'")
                day = folder / f"{PARTITION}={LAST}"
                if day.is_dir():
                    con.execute(f"copy ({source} limit 1) to '{day / '.part-inflight.parquet'}'")
            else:
                con.execute(f"copy ({source}) to '{folder / 'part-00000-a.snappy.parquet'}'")
            (folder / "_SUCCESS").touch()
            (folder / "._SUCCESS.crc").write_bytes(b"crc")
            for parquet in folder.glob("**/part-*.parquet"):
                (parquet.parent / f".{parquet.name}.crc").write_bytes(b"crc")
            tables.append(
                ParquetTable(
                    SCHEMA,
                    name,
                    folder,
                    columns[name],
                    (PARTITION,) if partitioned else (),
                )
            )
    return tables


def _snapshot(path: Path) -> dict[str, Any]:
    """Everything a reader of the snapshot sees: each table's columns (order, type) and rows."""
    with connect_snapshot(path) as con:
        columns = con.execute(
            "select table_schema, table_name, ordinal_position, column_name, data_type "
            "from information_schema.columns order by all"
        ).fetchall()
        tables = sorted({(schema, table) for schema, table, *_ in columns})
        rows = {
            f"{schema}.{table}": con.execute(
                f'select * from "{schema}"."{table}" order by all'
            ).fetchall()
            for schema, table in tables
            if schema != "sluice_meta"
        }
        version = read_version(con)
    return {"columns": columns, "rows": rows, "row_counts": version.row_counts}


def test_a_snapshot_from_parquet_folders_equals_one_from_the_warehouse(tmp_path: Path) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    build_warehouse(warehouse, FakeMarts(days=DAYS, last=LAST, event_names=2))
    with duckdb.connect(str(warehouse)) as con:
        con.execute(f"create table {SCHEMA}.{EMPTY} ({PARTITION} date, events bigint)")
    tables = _write_like_spark(warehouse, tmp_path / "spark" / "marts.db")

    from_duckdb = tmp_path / "from_duckdb.duckdb"
    from_parquet = tmp_path / "from_parquet.duckdb"
    publish_snapshot(warehouse, from_duckdb, "run-a")
    version = publish_snapshot_from_parquet(tables, from_parquet, "run-a")

    expected, published = _snapshot(from_duckdb), _snapshot(from_parquet)
    assert published["columns"] == expected["columns"]
    assert published["rows"] == expected["rows"]
    assert published["row_counts"] == expected["row_counts"] == version.row_counts
    assert version.row_counts[f"{SCHEMA}.dau"] == DAYS
    assert version.row_counts[f"{SCHEMA}.{EMPTY}"] == 0
    # Days stay dates, whichever side wrote them.
    dau = published["rows"][f"{SCHEMA}.dau"]
    assert isinstance(dau[0][0], dt.date)

    # The Parquet export of the snapshot works from it as from any other.
    current = publish_parquet(from_parquet, tmp_path / "parquet", version)
    assert (current / SCHEMA / "dau" / f"{PARTITION}={LAST}").is_dir()
