"""The warehouse's upkeep: retention drops whole days past each layer's horizon, compaction
rewrites the DuckDB file without the space that deletes left free. Dagster jobs in ``jobs``;
the work itself, without Dagster, in ``retention`` and ``compaction``; what is dropped and
what has been, in ``horizons``."""
