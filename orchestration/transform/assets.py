"""dbt models as Dagster assets, partitioned by UTC day.

A run over any range of days is ONE ``dbt build`` (without dbt's unit tests) with the range
passed in the environment (``orchestration/transform/window.py`` says why); incremental
models replace exactly that window. After dbt finishes, each partitioned model gets a few
figures of the days the run replaced, and marts a preview.
"""

import contextlib
import datetime as dt
import importlib.metadata
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DbtCliResource, DbtProject, dbt_assets
from packaging.version import Version

from common.settings import (
    DBT_PROJECT_DIR,
    MARTS_SCHEMA,
    WAREHOUSE_POOL,
    Settings,
    dbt_executable,
)
from orchestration.lib import (
    SluiceDbtTranslator,
    daily_partitions,
    read_warehouse,
    sql_date,
    window_dates,
)
from orchestration.transform.window import WINDOW_BUILD, window_env

DBT_OP_NAME = "dbt_models"
PREVIEW_ROWS = 10
# Each run leaves a folder of about 3 MB in the dbt target folder (manifest, compiled SQL,
# run results, dbt.log); the newest ones stay, to look into recent runs.
KEPT_RUN_FOLDERS = 20


def dbt_project(settings: Settings) -> DbtProject:
    return DbtProject(
        project_dir=DBT_PROJECT_DIR,
        profiles_dir=DBT_PROJECT_DIR,
        target=settings.dbt_target,
        target_path=settings.dbt_target_dir,
    )


@dataclass(frozen=True)
class _Relation:
    schema: str
    table: str
    # The date column a window run replaces (meta.partition_column), None if not partitioned;
    # the days before and after the window it also replaces (meta.replaces_days_*).
    partition_column: str | None
    days_before: int
    days_after: int


def _relations(manifest: Mapping[str, Any]) -> dict[str, _Relation]:
    """unique_id -> where each model lives and which days a window run of it replaces."""
    out = {}
    for unique_id, node in manifest["nodes"].items():
        if node["resource_type"] != "model":
            continue
        meta = {**node.get("meta", {}), **node["config"].get("meta", {})}
        incremental = node["config"].get("materialized") == "incremental"
        out[unique_id] = _Relation(
            node["schema"],
            node["alias"] or node["name"],
            meta.get("partition_column") if incremental else None,
            int(meta.get("replaces_days_before") or 0),
            int(meta.get("replaces_days_after") or 0),
        )
    return out


def _window_metadata(
    settings: Settings, relations: Mapping[str, _Relation], first: dt.date, last: dt.date
) -> dict[str, dict[str, Any]]:
    """Rows per partition that the run replaced (the window, widened as the model's meta says)
    and a preview for marts, read on the warehouse engine after dbt has finished (on DuckDB,
    once dbt has closed the file)."""
    metadata: dict[str, dict[str, Any]] = {}
    with read_warehouse(settings) as warehouse:
        for unique_id, relation in relations.items():
            if relation.partition_column is None:
                continue
            column = warehouse.quote(relation.partition_column)
            table = warehouse.table(relation.schema, relation.table)
            span = [
                first - dt.timedelta(days=relation.days_before),
                last + dt.timedelta(days=relation.days_after),
            ]
            rows = warehouse.rows(
                f"select cast({column} as string), count(*) from {table} "
                f"where {column} between {sql_date(span[0])} and {sql_date(span[1])} "
                "group by all order by 1"
            )
            counts = [int(n) for _, n in rows]
            # A few figures rather than a row count per day: each day of a range run gets
            # the same metadata, and a list of 30 counts would fill the asset's page.
            entry: dict[str, Any] = {
                "rows_in_window": sum(counts),
                "window": f"{span[0]} .. {span[1]}",
                "partitions_with_rows": len(counts),
                "first_partition_with_rows": rows[0][0] if rows else "none",
                "last_partition_with_rows": rows[-1][0] if rows else "none",
            }
            if len(counts) > 1:
                entry["rows_per_partition_min"] = min(counts)
                entry["rows_per_partition_max"] = max(counts)
            if first == last and span == [first, last]:
                # Dagster's own key: the UI shows it on the partition's page.
                entry["dagster/partition_row_count"] = sum(counts)
            if relation.schema == MARTS_SCHEMA:
                preview = warehouse.frame(
                    f"select * from {table} "
                    f"where {column} between {sql_date(first)} and {sql_date(last)} "
                    f"order by {column} desc limit {PREVIEW_ROWS}"
                )
                entry["preview"] = dg.MetadataValue.md(preview.to_markdown(index=False))
            metadata[unique_id] = entry
    return metadata


def build_transform_assets(settings: Settings) -> dg.AssetsDefinition:
    project = dbt_project(settings)

    @dbt_assets(
        manifest=project.manifest_path,
        project=project,
        name=DBT_OP_NAME,
        dagster_dbt_translator=SluiceDbtTranslator(),
        partitions_def=daily_partitions(settings),
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool=WAREHOUSE_POOL,
    )
    def dbt_models(context: dg.AssetExecutionContext, dbt: DbtCliResource) -> Iterator[Any]:
        first_day, last_day = window_dates(context.partition_time_window)
        # dbt runs as a child process; its profile finds the warehouse through this variable.
        os.environ.update(settings.subprocess_env())
        with _environment(window_env(first_day, last_day)):
            invocation = dbt.cli(list(WINDOW_BUILD), context=context)
        # Buffer the events: the metadata below needs dbt to have released the warehouse.
        events = list(invocation.stream())
        prune_run_folders(settings.dbt_target_dir, KEPT_RUN_FOLDERS)
        relations = _relations(invocation.manifest)
        extra = _window_metadata(settings, relations, first_day, last_day)
        for event in events:
            unique_id = _unique_id(event)
            if isinstance(event, dg.Output) and unique_id in extra:
                event = event.with_metadata({**event.metadata, **extra[unique_id]})
            yield event

    return dbt_models


def prune_run_folders(target_dir: Path, keep: int) -> list[Path]:
    """Delete all but the ``keep`` newest run folders that dagster-dbt left in ``target_dir``;
    returns the deleted ones."""
    folders = [path for path in target_dir.glob(f"{DBT_OP_NAME}-*") if path.is_dir()]
    folders.sort(key=lambda path: path.stat().st_mtime, reverse=True)
    for folder in folders[keep:]:
        shutil.rmtree(folder, ignore_errors=True)
    return folders[keep:]


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    """``values`` in os.environ while dagster-dbt starts dbt (it passes dbt a copy of
    os.environ and takes no environment of its own), then as before."""
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _unique_id(event: Any) -> str | None:
    value = getattr(event, "metadata", {}).get("unique_id")
    return getattr(value, "text", value)


class SluiceDbtCliResource(DbtCliResource):
    """dagster-dbt's resource without two start-up costs that Sluice's runs do not use.

    Before every invocation dagster-dbt runs ``dbt --version`` in a child process (2 s) and
    loads dbt's profile and adapter in this process (1.6 s) to fetch column metadata and row
    counts through it. Sluice runs the dbt installed beside this Python, whose version the
    package metadata gives, and reads row counts itself once dbt has released the warehouse
    (``_window_metadata``), on either engine.
    """

    @cached_property
    def _cli_version(self) -> Version:
        return Version(importlib.metadata.version("dbt-core"))

    def _initialize_dbt_core_adapter(self, args: Sequence[str]) -> Any:
        return None


def dbt_resource(settings: Settings) -> DbtCliResource:
    return SluiceDbtCliResource(
        project_dir=str(DBT_PROJECT_DIR),
        profiles_dir=str(DBT_PROJECT_DIR),
        target=settings.dbt_target,
        dbt_executable=dbt_executable(),
    )


FACT_KEY = dg.AssetKey(["core", "fct_events"])


def mart_keys(dbt_models: dg.AssetsDefinition) -> list[dg.AssetKey]:
    """The marts among the dbt assets (keys marts/<model>), in a stable order."""
    return sorted(
        (key for key in dbt_models.keys if key.path[0] == MARTS_SCHEMA),
        key=lambda key: key.to_user_string(),
    )
