"""The landing source's settings: constants only, nothing read from the environment.

Whose a landing file is, how much of them one query parses, and
the names dlt knows the source, its state and its tables by. What a landing file is (its
suffix, its encoding) is the event contract's, ``common.contract``: the ingest API writes
by it without importing this package, which would import dlt.
"""

from __future__ import annotations

from common.settings import RAW_EVENTS_TABLE, RAW_REJECTED_TABLE

# Writers that know their sender put files under sources/<name>/; files dropped anywhere
# else belong to the source "files".
SOURCES_FOLDER = "sources"
FILES_SOURCE = "files"

# A batch of new files (or of a big file's lines) is parsed in one query, in an in-memory
# DuckDB capped at STAGING_MEMORY_LIMIT: past it, DuckDB spills the batch's temporary tables.
# Without the cap a batch of 256 MB of lines peaked at 1.3-1.4 GiB for the whole load process;
# with 1GB, 1.2 GiB and no slower; with 768MB it spilled and took half as long again
# (10M events, docs/benchmarks.md, load).
BATCH_BYTES = 256 << 20
STAGING_MEMORY_LIMIT = "1GB"
# Where a load's Parquet files wait for dlt to import them, in the pipeline's working folder.
STAGING_FOLDER = "landing_staging"

SOURCE_NAME = "landing"
# The resource whose dlt state lists the loaded files (see landing_file_contents).
FILES_RESOURCE = "landing_files"
EVENTS_TABLE = RAW_EVENTS_TABLE
REJECTED_TABLE = RAW_REJECTED_TABLE
