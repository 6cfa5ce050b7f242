"""Helpers every stage shares: partitions, the dbt translator, asset ownership and freshness,
and reads of the built tables on the warehouse engine (``read_warehouse``).

Nothing here reads the environment; callers pass a ``Settings``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator, Mapping
from datetime import timedelta
from typing import Any

import dagster as dg
import duckdb
import pandas as pd
from dagster._core.definitions.unresolved_asset_job_definition import (
    UnresolvedAssetJobDefinition,
)
from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings

from common.settings import Settings
from orchestration.maintain.horizons import first_partition

GROUP_INGEST = "ingest"
GROUP_TRANSFORM = "transform"
GROUP_MARTS = "marts"
GROUP_SERVE = "serve"

OWNER_PLATFORM = "team:data-platform"
OWNER_ANALYTICS = "team:analytics"

# dbt folders (the first path part under models/) mapped to Dagster groups.
_GROUP_BY_DBT_FOLDER = {"staging": GROUP_TRANSFORM, "core": GROUP_TRANSFORM, "marts": GROUP_MARTS}

# Raw data is loaded when files land and at least daily; marts are built each night for
# yesterday, so both should have been refreshed within a little more than a day.
RAW_FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(hours=26), warn_window=timedelta(hours=24)
)
MARTS_FRESHNESS = dg.FreshnessPolicy.cron(
    deadline_cron="0 3 * * *", lower_bound_delta=timedelta(hours=24), timezone="UTC"
)


def daily_partitions(settings: Settings) -> dg.DailyPartitionsDefinition:
    """One partition per UTC day from the configured start date up to yesterday; once
    retention has dropped days, from the first day every layer still holds (the days before it
    can no longer be built, so they are no partitions)."""
    first, _ = first_partition(settings)
    return dg.DailyPartitionsDefinition(start_date=first.isoformat(), timezone="UTC", end_offset=0)


def window_dates(window: dg.TimeWindow) -> tuple[dt.date, dt.date]:
    """The first and last day (both included) of a partition time window."""
    first = window.start.date()
    last = (window.end - timedelta(days=1)).date()
    return first, last


def _describe_test(test: Mapping[str, Any]) -> str:
    """What a dbt test checks, in words, for the Dagster UI: its own description when the
    project gives one, else one made from the generic test's name and arguments."""
    if test.get("description"):
        return str(test["description"])
    metadata = test.get("test_metadata") or {}
    kwargs = metadata.get("kwargs", {})
    column = kwargs.get("column_name") or test.get("column_name") or "the row"
    config = test.get("config", {})
    where = f" (rows where {config['where']})" if config.get("where") else ""
    name = metadata.get("name")
    if name == "not_null":
        text = f"{column} is never null"
    elif name == "unique":
        text = f"{column} is unique"
    elif name == "unique_near_window":
        text = f"{column} is unique within the window's days and dedup_lookback_days around them"
    elif name == "accepted_values":
        values = ", ".join(str(v) for v in kwargs.get("values", []))
        text = f"{column} is one of: {values}"
    elif name == "relationships":
        target = str(kwargs.get("to", "")).removeprefix("ref('").removesuffix("')")
        text = f"every {column} is a {kwargs.get('field', column)} of {target}"
    else:
        text = f"dbt test {test.get('name', '')}"
    return f"dbt test: {text}{where}."


class SluiceDbtTranslator(DagsterDbtTranslator):
    """Keys are ``<schema>/<name>``; groups follow dbt folders; every asset has an owner."""

    def __init__(self) -> None:
        super().__init__(settings=DagsterDbtTranslatorSettings(enable_asset_checks=True))

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        if dbt_resource_props["resource_type"] == "source":
            return dg.AssetKey([dbt_resource_props["source_name"], dbt_resource_props["name"]])
        schema = dbt_resource_props.get("config", {}).get("schema") or dbt_resource_props["schema"]
        return dg.AssetKey([schema, dbt_resource_props["name"]])

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        fqn = dbt_resource_props.get("fqn", [])
        folder = fqn[1] if len(fqn) > 2 else ""
        return _GROUP_BY_DBT_FOLDER.get(folder, GROUP_TRANSFORM)

    def get_owners(self, dbt_resource_props: Mapping[str, Any]) -> list[str]:
        return [OWNER_ANALYTICS]

    def get_description(self, dbt_resource_props: Mapping[str, Any]) -> str:
        description = dbt_resource_props.get("description") or ""
        return (
            description or f"dbt {dbt_resource_props['resource_type']} {dbt_resource_props['name']}"
        )

    def get_asset_spec(
        self, manifest: Mapping[str, Any], unique_id: str, project: Any
    ) -> dg.AssetSpec:
        spec = super().get_asset_spec(manifest, unique_id, project)
        if spec.group_name == GROUP_MARTS:
            spec = spec.replace_attributes(freshness_policy=MARTS_FRESHNESS)
        return spec

    def get_asset_check_spec(
        self,
        asset_spec: dg.AssetSpec,
        manifest: Mapping[str, Any],
        unique_id: str,
        project: Any,
    ) -> dg.AssetCheckSpec | None:
        spec = super().get_asset_check_spec(asset_spec, manifest, unique_id, project)
        if spec is None or spec.description:
            return spec
        return spec._replace(description=_describe_test(manifest["nodes"][unique_id]))


def late_days(
    events_by_date: Mapping[str, int],
    built_partitions: set[str] | Any,
    today: dt.date,
    lookback_days: int,
) -> tuple[list[str], list[str]]:
    """Split the already-built days a load touched into (rebuild now, too old to rebuild)."""
    cutoff = (today - timedelta(days=lookback_days)).isoformat()
    touched = sorted(day for day in events_by_date if day in built_partitions)
    return [d for d in touched if d >= cutoff], [d for d in touched if d < cutoff]


SPARK = "spark"


class WarehouseReader:
    """Read-only SQL on the warehouse engine's built tables: the DuckDB file, or Spark's tables
    through its Thrift server. Queries use the SQL both engines share (``date '...'``
    literals from ``sql_date``, ``cast(... as string)``, ``group by all``): PyHive has no
    ``?`` parameters."""

    def __init__(self, engine: str, cursor: Any) -> None:
        self.engine = engine
        self._cursor = cursor

    def quote(self, name: str) -> str:
        """An identifier, quoted as the engine quotes one."""
        if self.engine == SPARK:
            return "`" + name.replace("`", "``") + "`"
        return '"' + name.replace('"', '""') + '"'

    def table(self, schema: str, name: str) -> str:
        return f"{self.quote(schema)}.{self.quote(name)}"

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        self._cursor.execute(sql)
        return [tuple(row) for row in self._cursor.fetchall()]

    def frame(self, sql: str) -> pd.DataFrame:
        self._cursor.execute(sql)
        names = [column[0] for column in self._cursor.description]
        return pd.DataFrame(self._cursor.fetchall(), columns=names)


def sql_date(day: dt.date) -> str:
    """A date literal both engines read (a ``date``, so nothing from outside is inlined)."""
    return f"date '{dt.date.fromordinal(day.toordinal()).isoformat()}'"


@contextlib.contextmanager
def read_warehouse(settings: Settings) -> Iterator[WarehouseReader]:
    """A reader of the engine's tables: the DuckDB warehouse opened read-only (once dbt has
    released it), or a connection to Spark's Thrift server (``common.spark``)."""
    if settings.warehouse_engine == SPARK:
        from common.spark import thrift_connection

        connection = thrift_connection(settings)
        try:
            yield WarehouseReader(SPARK, connection.cursor())
        finally:
            connection.close()
    else:
        with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
            yield WarehouseReader(settings.warehouse_engine, con)


# What `dg.define_asset_job` returns; dagster does not export the class at the top level.
AssetJob = UnresolvedAssetJobDefinition
