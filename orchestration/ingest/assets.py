"""The dlt load of landing files into ``raw.events`` (and ``raw.rejected_events``)."""

import datetime as dt
from collections.abc import Iterator
from typing import Any

import dagster as dg
from dagster_dlt import DagsterDltResource, DagsterDltTranslator, dlt_assets
from dagster_dlt.translator import DltResourceTranslatorData

from ingestion.landing_source import LoadReport, landing_source
from ingestion.pipeline import LOADER_FILE_FORMAT, make_pipeline
from orchestration.lib import GROUP_INGEST, OWNER_PLATFORM, RAW_FRESHNESS, late_days
from sluice.settings import (
    RAW_EVENTS_TABLE,
    RAW_REJECTED_TABLE,
    RAW_SCHEMA,
    WAREHOUSE_POOL,
    Settings,
)

RAW_EVENTS_KEY = dg.AssetKey([RAW_SCHEMA, RAW_EVENTS_TABLE])
LOAD_OP_NAME = "load_landing_files"


_DESCRIPTIONS = {
    RAW_EVENTS_TABLE: (
        "Segment-spec messages from the landing files, one row per accepted line "
        "(duplicate deliveries kept; dbt counts each messageId once)."
    ),
    RAW_REJECTED_TABLE: (
        "Landing-file lines that break the event contract: file, line number, reason and "
        "the raw text, so nothing is lost silently."
    ),
}


class RawTranslator(DagsterDltTranslator):
    def get_asset_spec(self, data: DltResourceTranslatorData) -> dg.AssetSpec:
        spec = super().get_asset_spec(data)
        return spec.replace_attributes(
            key=dg.AssetKey([RAW_SCHEMA, data.resource.name]),
            deps=[],
            group_name=GROUP_INGEST,
            owners=[OWNER_PLATFORM],
            description=_DESCRIPTIONS.get(data.resource.name, spec.description),
            freshness_policy=RAW_FRESHNESS,
        )


def build_ingest_assets(settings: Settings, transformed_key: dg.AssetKey) -> dg.AssetsDefinition:
    """The load asset; ``transformed_key`` is the partitioned fact whose built days it checks."""
    pipeline = make_pipeline(settings)

    @dlt_assets(
        dlt_source=landing_source(str(settings.landing_dir)),
        dlt_pipeline=pipeline,
        name=LOAD_OP_NAME,
        dagster_dlt_translator=RawTranslator(),
        pool=WAREHOUSE_POOL,
    )
    def load_landing_files(
        context: dg.AssetExecutionContext, dlt: DagsterDltResource
    ) -> Iterator[Any]:
        if context.is_subset:
            # Both tables come from one pass over each file, and the file is then marked
            # loaded: loading one table alone would lose the other's rows.
            raise dg.Failure("raw/events and raw/rejected_events load together; select both assets")
        report = LoadReport()
        results = list(
            dlt.run(
                context=context,
                dlt_source=landing_source(str(settings.landing_dir), report),
                dlt_pipeline=pipeline,
                loader_file_format=LOADER_FILE_FORMAT,
            )
        )
        built = context.instance.get_materialized_partitions(transformed_key)
        _, beyond = late_days(
            report.events_by_date, built, dt.date.today(), settings.late_lookback_days
        )
        late_rows = sum(report.events_by_date[day] for day in beyond)
        context.log.info(
            f"loaded {report.loaded_rows} rows from {len(report.files)} new files "
            f"({report.skipped_files} already loaded), rejected {report.rejected_rows}"
        )
        if beyond:
            context.log.warning(
                f"{late_rows} late events belong to days built more than "
                f"{settings.late_lookback_days} days ago ({', '.join(beyond)}); they are not "
                f"rebuilt automatically: run `sluice materialize --start {beyond[0]} "
                f"--end {beyond[-1]}` to include them"
            )
        for result in results:
            yield dg.MaterializeResult(
                asset_key=result.asset_key,
                metadata={
                    **(result.metadata or {}),
                    "new_files": len(report.files),
                    "skipped_files": report.skipped_files,
                    "loaded_rows": report.loaded_rows,
                    "rejected_rows": report.rejected_rows,
                    "rejected_by_reason": dg.MetadataValue.json(report.rejected_by_reason),
                    "events_by_date": dg.MetadataValue.json(report.events_by_date),
                    "late_rows_beyond_lookback": late_rows,
                },
            )

    return load_landing_files
