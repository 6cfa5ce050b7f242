"""The dlt load of landing files into ``raw.events`` (and ``raw.rejected_events``)."""

import datetime as dt
from collections.abc import Iterator, Mapping
from typing import Any

import dagster as dg
from dagster_dlt import DagsterDltResource, DagsterDltTranslator, dlt_assets
from dagster_dlt.translator import DltResourceTranslatorData

from common.settings import (
    RAW_EVENTS_TABLE,
    RAW_REJECTED_TABLE,
    RAW_SCHEMA,
    WAREHOUSE_POOL,
    Settings,
)
from ingestion.landing import landing_source
from ingestion.landing.helpers import LoadReport
from ingestion.pipeline import LOADER_FILE_FORMAT, make_pipeline, reset_local_state
from orchestration.lib import GROUP_INGEST, OWNER_PLATFORM, RAW_FRESHNESS, late_days

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
        report = LoadReport()
        source = landing_source(str(settings.landing_dir), report)
        results = _load_both_tables(context, dlt, source, pipeline, settings)
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
        if context.is_subset:
            # Both tables come from one pass over each file, and the file is then marked
            # loaded: loading one table alone would lose the other's rows. So a run that
            # selected one of them (the UI's "Materialize" on one asset) loads both, and
            # records the other's materialization as well.
            context.log.info("raw/events and raw/rejected_events load together: both were loaded")
        for asset_key, dlt_metadata in results.items():
            metadata = {
                **dlt_metadata,
                "new_files": len(report.files),
                "skipped_files": report.skipped_files,
                "loaded_rows": report.loaded_rows,
                "rejected_rows": report.rejected_rows,
                "rejected_by_reason": dg.MetadataValue.json(report.rejected_by_reason),
                "events_by_date": dg.MetadataValue.json(report.events_by_date),
                "late_rows_beyond_lookback": late_rows,
            }
            if asset_key in context.selected_asset_keys:
                yield dg.MaterializeResult(asset_key=asset_key, metadata=metadata)
            else:
                context.log_event(dg.AssetMaterialization(asset_key=asset_key, metadata=metadata))

    return load_landing_files


def _load_both_tables(
    context: dg.AssetExecutionContext,
    dlt: DagsterDltResource,
    source: Any,
    pipeline: Any,
    settings: Settings,
) -> dict[dg.AssetKey, Mapping[str, Any]]:
    """Run the load over every resource of ``source``; asset key -> dlt's metadata.

    ``DagsterDltResource.run`` does the same but drops the resources a subset run did not
    select, which here would mark files loaded without the other table's rows.
    """
    reset_local_state(pipeline, settings)
    info = pipeline.run(source, loader_file_format=LOADER_FILE_FORMAT)
    info.raise_on_failed_jobs()
    translator = RawTranslator()
    return {
        translator.get_asset_spec(
            DltResourceTranslatorData(resource=resource, pipeline=pipeline)
        ).key: dlt.extract_resource_metadata(context, resource, info, pipeline)
        for resource in source.selected_resources.values()
    }
