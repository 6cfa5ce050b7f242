"""The serving snapshot as a Dagster asset: published after the marts in every build run.

It reads the warehouse, so it joins the warehouse pool; it is not partitioned, because each
publish copies the marts whole (a run over any range of days publishes once, at its end).

On DuckDB it copies the warehouse file's marts. On Spark (``SLUICE_WAREHOUSE_ENGINE=spark``)
it asks the Thrift server where each mart's folder is (``describe table extended``) and
publishes from the Parquet files there, each table's columns in the order and types of its
dbt contract (``models/marts/_marts__models.yml``, from the manifest): Spark puts partition
columns last, and the snapshot must look the same whichever engine built the marts.
"""

import json
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import dagster as dg

from common.disk import disk_bytes
from common.settings import MARTS_SCHEMA, WAREHOUSE_POOL, Settings
from orchestration.lib import (
    GROUP_SERVE,
    OWNER_PLATFORM,
    SPARK,
    WarehouseReader,
    read_warehouse,
)
from orchestration.prepare import prepare_dbt_manifest
from serving.snapshot import (
    ParquetTable,
    SnapshotVersion,
    publish_parquet,
    publish_snapshot,
    publish_snapshot_from_parquet,
)

SNAPSHOT_KEY = dg.AssetKey(["serving", "snapshot"])


def contract_columns(manifest: Mapping[str, Any], schema: str) -> dict[str, list[tuple[str, str]]]:
    """table -> its contract's (column, data type), in the contract's order, for the models
    of ``schema`` that declare columns (an empty type where the contract gives none)."""
    out = {}
    for node in manifest["nodes"].values():
        if node["resource_type"] != "model" or node["schema"] != schema or not node["columns"]:
            continue
        columns = [
            (str(column["name"]), str(column.get("data_type") or ""))
            for column in node["columns"].values()
        ]
        out[str(node["alias"] or node["name"])] = columns
    return out


def _location(table: str, value: str) -> Path:
    """The local folder of a table location such as ``file:/data/spark/warehouse/marts.db/dau``."""
    parsed = urllib.parse.urlparse(value)
    if parsed.scheme not in ("", "file"):
        raise ValueError(
            f"{table} is at {value}: the snapshot is published from tables in folders of this "
            f"machine (file:), not from {parsed.scheme}:"
        )
    return Path(urllib.parse.unquote(parsed.path))


def spark_table(
    warehouse: WarehouseReader,
    schema: str,
    table: str,
    contract: Sequence[tuple[str, str]] | None,
) -> ParquetTable | None:
    """Where Spark keeps ``schema.table`` and its columns, in the contract's order and types
    when the model has a contract; None for a view."""
    name = f"{schema}.{table}"
    rows = warehouse.rows(f"describe table extended {warehouse.table(schema, table)}")
    spark_columns: list[tuple[str, str]] = []
    partitions: list[str] = []
    details: dict[str, str] = {}
    section = "columns"
    for column, kind, _comment in rows:
        column, kind = (column or "").strip(), (kind or "").strip()
        if column == "# Partition Information":
            section = "partitions"
        elif column == "# Detailed Table Information":
            section = "details"
        elif not column or column.startswith("#"):
            if section == "columns":
                section = "other"
        elif section == "columns":
            spark_columns.append((column, kind))
        elif section == "partitions":
            partitions.append(column)
        elif section == "details":
            details[column] = kind
    if details.get("Type", "").upper() == "VIEW":
        return None
    if "Location" not in details:
        raise ValueError(f"Spark gives no Location for {name} (describe table extended)")
    columns = spark_columns
    if contract:
        ordered = [c.lower() for c, _ in contract]
        if sorted(ordered) != sorted(c.lower() for c, _ in spark_columns):
            raise ValueError(
                f"{name} has the columns {[c for c, _ in spark_columns]} on Spark but its dbt "
                f"contract declares {[c for c, _ in contract]}: build the marts again "
                "(`sluice materialize`) so the tables match the models"
            )
        spark_types = {c.lower(): kind for c, kind in spark_columns}
        columns = [(c.lower(), kind or spark_types[c.lower()]) for c, kind in contract]
    return ParquetTable(
        schema,
        table,
        _location(name, details["Location"]),
        tuple(columns),
        tuple(c.lower() for c in partitions),
    )


def spark_marts(settings: Settings) -> list[ParquetTable]:
    """Every table of the marts schema on Spark, as the snapshot reads it."""
    manifest = json.loads(prepare_dbt_manifest(settings).read_text())
    contracts = contract_columns(manifest, MARTS_SCHEMA)
    tables = []
    with read_warehouse(settings) as warehouse:
        for _schema, table, temporary in warehouse.rows(f"show tables in {MARTS_SCHEMA}"):
            if temporary:
                continue
            found = spark_table(warehouse, MARTS_SCHEMA, table, contracts.get(table))
            if found is not None:
                tables.append(found)
    return tables


def publish_marts(settings: Settings, run_id: str) -> SnapshotVersion:
    """The serving snapshot from the warehouse engine's marts."""
    if settings.warehouse_engine == SPARK:
        return publish_snapshot_from_parquet(spark_marts(settings), settings.serving_path, run_id)
    return publish_snapshot(settings.warehouse_path, settings.serving_path, run_id)


def warehouse_bytes(settings: Settings) -> int:
    """The warehouse's size: the DuckDB file, or the folders of Spark's tables."""
    if settings.warehouse_engine == SPARK:
        return disk_bytes(settings.spark_warehouse_dir)
    return settings.warehouse_path.stat().st_size


def build_serve_assets(settings: Settings, mart_keys: Sequence[dg.AssetKey]) -> dg.AssetsDefinition:
    @dg.asset(
        key=SNAPSHOT_KEY,
        deps=list(mart_keys),
        group_name=GROUP_SERVE,
        owners=[OWNER_PLATFORM],
        kinds={"duckdb"},
        pool=WAREHOUSE_POOL,
        description=(
            f"A read-only copy of every table in the {MARTS_SCHEMA} schema at "
            f"{settings.serving_path}, swapped in whole after each build, for BI tools and "
            "reports (DuckDB storage v1.0.0, so DuckDB 1.x clients open it too). "
            "sluice_meta.snapshot_version names the run that published it. Also as Parquet "
            f"under {settings.serving_parquet_dir}/current."
        ),
    )
    def snapshot(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        version = publish_marts(settings, context.run.run_id)
        parquet = publish_parquet(settings.serving_path, settings.serving_parquet_dir, version)
        return dg.MaterializeResult(
            metadata={
                "path": dg.MetadataValue.path(str(settings.serving_path)),
                "parquet": dg.MetadataValue.path(str(parquet)),
                "built_at": version.built_at.isoformat(),
                "row_counts": dg.MetadataValue.json(version.row_counts),
                "bytes": settings.serving_path.stat().st_size,
                # The warehouse's size after the build (a file size, or on Spark the tables'
                # folders: the plot in the UI shows its growth); sluice_storage_bytes on
                # /metrics has it between builds.
                "warehouse_bytes": warehouse_bytes(settings),
            }
        )

    return snapshot
