"""Benchmark 1, load: landing files to raw with Sluice's dlt pipeline, against a plain DuckDB
``CREATE TABLE ... AS SELECT FROM read_json(...)`` of the same files.

Checks: the same accepted rows (count, distinct message ids, and a checksum of the ids).
Target: Sluice within 1.5x of the baseline. A third measurement, the floor, runs Sluice's own
SQL (numbered lines, the contract's checks, rejected lines kept with their reason) in the
same batches straight into a DuckDB file, without dlt: what the load would cost if dlt, its
Parquet hop and its exactly-once state cost nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.context import Context
from bench.measure import expect_equal, ratio, run_worker, summarize

TARGET = 1.5
# The load's peak memory should not grow with the data: it parses batches of 256 MB of lines
# and inserts one batch's Parquet file at a time. Checked where the data outgrows a batch
# many times over (M: 10M events, L: 50M).
RSS_TARGET_BYTES = 1.5 * 2**30
RSS_CHECKED_SIZES = ("M", "L")


def ids(ctx: Context, database: Path, table: str) -> dict[str, Any]:
    """Rows, distinct message ids and an id checksum of ``table`` in ``database``."""
    params = {"database": str(database), "table": table}
    return run_worker("id_summary", params, ctx.source).result


def run(ctx: Context) -> dict[str, Any]:
    data = ctx.month
    files = [str(f) for f in data.files]
    sluice_runs, baseline_runs, floor_runs = [], [], []
    for repeat in range(ctx.repeats):
        data_dir = ctx.data_dir(f"load-{repeat}")
        data_dir.land(data.files)
        database = data_dir.root / "baseline.duckdb"

        def measure_baseline(database=database):  # type: ignore[no-untyped-def]
            return run_worker("baseline_load", {"files": files, "database": database}, ctx.source)

        def measure_floor(database=data_dir.root / "floor.duckdb"):  # type: ignore[no-untyped-def]
            return run_worker(
                "checks_only_load", {"files": files, "database": database}, ctx.source
            )

        # Alternate the order so that neither side always runs on a warm page cache.
        if repeat % 2 == 0:
            base, floor, ours = measure_baseline(), measure_floor(), data_dir.load()
        else:
            ours, floor, base = data_dir.load(), measure_floor(), measure_baseline()
        # Each side's output, summarised in a process of its own (not in its peak RSS).
        expected = ids(ctx, database, "raw_events")
        for name, got in (
            ("load", ids(ctx, data_dir.warehouse, "raw.events")),
            ("load floor", ids(ctx, data_dir.root / "floor.duckdb", "raw_events")),
        ):
            for key in ("rows", "ids", "checksum"):
                expect_equal(f"{name}: accepted message ids ({key})", got[key], expected[key])
        sluice_runs.append(ours)
        baseline_runs.append(base)
        floor_runs.append(floor)
        ctx.done_with(data_dir)
    ours_stats, base_stats = summarize(sluice_runs), summarize(baseline_runs)
    floor_stats = summarize(floor_runs)
    measured = ratio(ours_stats, base_stats)
    floor = ratio(floor_stats, base_stats)
    rows = sluice_runs[0].result["rows"]
    peak = ours_stats["peak_rss"]["high"]
    rss_target, rss_measured, rss_met = "", "", True
    if ctx.size.name in RSS_CHECKED_SIZES:
        rss_target = f"; peak RSS <= {RSS_TARGET_BYTES / 2**30:.1f} GiB"
        rss_measured = f"; peak RSS {peak / 2**30:.2f} GiB"
        rss_met = peak <= RSS_TARGET_BYTES
    return {
        "title": "Load: landing files to raw",
        "input": f"{len(files)} files, {data.lines:,} lines ({rows:,} accepted)",
        "rows": [
            {"label": "baseline: DuckDB read_json into a table", **base_stats, "ratio": 1.0},
            {
                "label": "floor: Sluice's line checks and quarantine into a table (no dlt)",
                **floor_stats,
                "ratio": floor,
            },
            {"label": "Sluice: dlt pipeline (ingestion.landing)", **ours_stats, "ratio": measured},
        ],
        "target": f"Sluice <= {TARGET}x baseline" + rss_target,
        "measured": f"{measured:.2f}x; the checks alone, without dlt: {floor:.2f}x" + rss_measured,
        "met": measured <= TARGET and rss_met,
        "checked": "same accepted rows: count, distinct message ids and an id checksum",
        "events_per_second": rows / ours_stats["seconds"]["median"],
    }
