"""The dlt pipeline that owns the ``raw`` schema, in the warehouse engine's place.

``SLUICE_WAREHOUSE_ENGINE`` (``Settings.warehouse_engine``) picks the destination:

- ``duckdb``: the pipeline ``sluice_landing`` loads ``raw.events`` and ``raw.rejected_events``
  into the warehouse file (``Settings.warehouse_path``).
- ``spark``: the pipeline ``sluice_lake`` writes them as Parquet into the lake folder
  (``Settings.lake_dir``) through dlt's filesystem destination, for Spark to read
  (``lake_table_dir``). The two engines' pipelines have different names, so a data directory
  never mixes their states.

On the lake, ``raw/events`` is a Delta table partitioned by ``event_date`` (the UTC date of
``timestamp``): plain Parquet tables on dlt's filesystem destination land as
``<table>/<load_id>.<file_id>.parquet`` with no partitions, and only its table formats write
partition folders. So the files are ``raw/events/event_date=YYYY-MM-DD/*.parquet`` beside a
``_delta_log`` folder, and Spark reads the folder as a plain Hive-partitioned Parquet table
(dbt_project/macros/raw_sources.sql), ignoring the log: a build of a window reads only its
days' folders. That is sound because dlt only appends to it, so every Parquet file in the
folders is live data. Never run OPTIMIZE, VACUUM, a delete or a compaction on the lake with
Delta tools: they leave the replaced files in place until a vacuum, and Spark would read them
as well. ``raw/rejected_events`` is plain Parquet files (no table format).

Exactly once, and where it is not: the loaded files' names are the landing resource's dlt
state (ingestion/landing). The pipeline's local state takes them at extract time; the
destination gets them at the end of the load: the filesystem destination writes the state as
``_dlt_pipeline_state/sluice_lake__<load_id>__<hash>.jsonl`` in ``complete_load``, after
every table's files (then the ``_dlt_loads`` record); DuckDB writes it as a row that counts
only once the load's ``_dlt_loads`` record is written, after the tables' rows. A load that
dies in between leaves its rows in ``raw`` but not the state, and every load starts with
``reset_local_state``, which drops the local state (and the unfinished package, which dlt
alone would have finished) and restores the state from the destination: the next load takes
the same files again, and their rows are in ``raw`` twice (on the lake, a second set of
Parquet files in the same day folders). dbt's ``fct_events`` keeps one row per
``message_id`` within the run's window and the 7 days around it, so such copies count once
in the facts and marts; ``raw`` itself may hold them.

The working folder lives in the data directory (``Settings.dlt_dir``), so two data
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
from pathlib import Path

import dlt
from dlt.destinations.impl.duckdb.configuration import DuckDbCredentials

from common.settings import RAW_EVENTS_TABLE, RAW_REJECTED_TABLE, RAW_SCHEMA, Settings

PIPELINE_NAME = "sluice_landing"
# The Spark engine's pipeline: its state lives in the lake, not in the warehouse file.
LAKE_PIPELINE_NAME = "sluice_lake"
LOADER_FILE_FORMAT = "parquet"
_LOCK_NAME = ".sluice_landing.lock"


class _JsonHintNotice(logging.Filter):
    """Drop dlt's notice that Arrow strings meet a JSON column hint: that is intended here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "when merging arrow schema with dlt schema" not in record.getMessage()


def pipeline_name(settings: Settings) -> str:
    """The name of the warehouse engine's pipeline: what readers of its state ask dlt for."""
    return LAKE_PIPELINE_NAME if settings.warehouse_engine == "spark" else PIPELINE_NAME


def lake_table_dir(settings: Settings, table: str) -> Path:
    """Spark engine: the folder of a raw table in the lake, ``<lake>/raw/<table>``:
    ``raw/events`` (day folders ``event_date=YYYY-MM-DD``) and ``raw/rejected_events``.

    The dbt project builds the same paths itself from ``SLUICE_LAKE_DIR`` (the environment
    that ``Settings.subprocess_env`` exports; dbt_project/macros/raw_sources.sql)."""
    if table not in (RAW_EVENTS_TABLE, RAW_REJECTED_TABLE):
        raise ValueError(
            f"table {table!r}: the lake holds {RAW_EVENTS_TABLE!r} and {RAW_REJECTED_TABLE!r}"
        )
    return settings.lake_dir / RAW_SCHEMA / table


def make_pipeline(settings: Settings) -> dlt.Pipeline:
    # A loaded package keeps only its record, not its Parquet files: the rows are in the
    # warehouse, and the files would otherwise pile up with every load.
    dlt.config["load.delete_completed_jobs"] = True
    # One load job at a time: a load's Parquet files (one per batch of landing files) all go
    # into the same two tables, and dlt's default pool ran their INSERTs side by side on
    # both cores, each with its own buffers. At M (10M events, 11 files) that took 23.8 s and
    # 3.1 GiB; one after another, 10.5 s and 1.4 GiB (docs/benchmarks.md, load).
    dlt.config["load.workers"] = 1
    logger = logging.getLogger("dlt")
    if not any(isinstance(f, _JsonHintNotice) for f in logger.filters):
        logger.addFilter(_JsonHintNotice())
    if settings.warehouse_engine == "spark":
        return _lake_pipeline(settings)
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


def _lake_pipeline(settings: Settings) -> dlt.Pipeline:
    settings.lake_dir.mkdir(parents=True, exist_ok=True)
    with _working_folder_lock(settings):
        return dlt.pipeline(
            pipeline_name=LAKE_PIPELINE_NAME,
            destination=dlt.destinations.filesystem(
                bucket_url=settings.lake_dir.resolve().as_uri()
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
    next one, so drop it and let the pipeline restore its state from the destination (the
    warehouse, or the lake's state files) or, where it cannot, drop only the pending
    packages."""
    with _working_folder_lock(settings):
        if pipeline.config.restore_from_destination:
            pipeline.drop()
        else:
            pipeline.drop_pending_packages()
