"""The dlt pipeline that owns the warehouse's ``raw`` schema.

Its working folder lives in the data directory (``Settings.dlt_dir``), so two data
directories never share dlt state. It never runs in dev mode, and runs are serialized by the
Dagster pool that every warehouse writer joins. Creating the working folder and resetting it
before a load (``reset_local_state``) take a file lock beside it: dlt deletes and re-creates
the folder, and a second process building its pipeline at that moment (a CLI run starting
while a scheduled run loads) would find it half there and fail with ``FileExistsError``.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
from collections.abc import Iterator

import dlt
from dlt.destinations.impl.duckdb.configuration import DuckDbCredentials

from common.settings import RAW_SCHEMA, Settings

PIPELINE_NAME = "sluice_landing"
LOADER_FILE_FORMAT = "parquet"
_LOCK_NAME = ".sluice_landing.lock"


class _JsonHintNotice(logging.Filter):
    """Drop dlt's notice that Arrow strings meet a JSON column hint: that is intended here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "when merging arrow schema with dlt schema" not in record.getMessage()


def make_pipeline(settings: Settings) -> dlt.Pipeline:
    # A loaded package keeps only its record, not its Parquet files: the rows are in the
    # warehouse, and the files would otherwise pile up with every load.
    dlt.config["load.delete_completed_jobs"] = True
    logger = logging.getLogger("dlt")
    if not any(isinstance(f, _JsonHintNotice) for f in logger.filters):
        logger.addFilter(_JsonHintNotice())
    settings.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
    with _working_folder_lock(settings):
        return dlt.pipeline(
            pipeline_name=PIPELINE_NAME,
            destination=dlt.destinations.duckdb(
                credentials=DuckDbCredentials(
                    str(settings.warehouse_path),
                    # raw rows carry their file and line number, so their order in the table says
                    # nothing. The staged Parquet files are written by several threads; keeping
                    # their order, DuckDB's insert took twice as long and left raw twice the size
                    # (the month at S: 2.1 s and 61 MB against 1.1 s and 33 MB).
                    global_config={"preserve_insertion_order": False},
                )
            ),
            dataset_name=RAW_SCHEMA,
            pipelines_dir=str(settings.dlt_dir),
            dev_mode=False,
        )


@contextlib.contextmanager
def _working_folder_lock(settings: Settings) -> Iterator[None]:
    settings.dlt_dir.mkdir(parents=True, exist_ok=True)
    with (settings.dlt_dir / _LOCK_NAME).open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def reset_local_state(pipeline: dlt.Pipeline, settings: Settings) -> None:
    """Before a load, as dagster-dlt does: local state left by a failed run would fail the
    next one, so drop it and let the pipeline restore its state from the warehouse (or, where
    it cannot, drop only the pending packages)."""
    with _working_folder_lock(settings):
        if pipeline.config.restore_from_destination:
            pipeline.drop()
        else:
            pipeline.drop_pending_packages()
