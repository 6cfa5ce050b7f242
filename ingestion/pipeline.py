"""The dlt pipeline that owns the warehouse's ``raw`` schema.

Its working folder lives in the data directory (``Settings.dlt_dir``), so two data
directories never share dlt state. It never runs in dev mode, and runs are serialized by the
Dagster pool that every warehouse writer joins.
"""

from __future__ import annotations

import dlt

from sluice.settings import RAW_SCHEMA, Settings

PIPELINE_NAME = "sluice_landing"
LOADER_FILE_FORMAT = "parquet"


def make_pipeline(settings: Settings) -> dlt.Pipeline:
    settings.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
    return dlt.pipeline(
        pipeline_name=PIPELINE_NAME,
        destination=dlt.destinations.duckdb(credentials=str(settings.warehouse_path)),
        dataset_name=RAW_SCHEMA,
        pipelines_dir=str(settings.dlt_dir),
        dev_mode=False,
    )
