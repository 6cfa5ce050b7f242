"""Benchmark 5, memory: peak RSS (the whole process tree) while dbt builds one big day, and
how it changes as history grows (taken from benchmark 2's runs).

The issue's target is 4 GB for a 10M-event day; at size S the day has about 1M events and the
target is scaled down in proportion (0.4 GB), at M and L it is the 10M-event day itself. The
baseline is the hand-written SQL script computing the same day's marts from the same file.
Checks: the day's marts equal the baseline's.
"""

from __future__ import annotations

from typing import Any

import duckdb

from bench import baseline
from bench.context import Context
from bench.measure import Stats, expect_rows_equal, ratio, run_worker, summarize


def run(ctx: Context, history: dict[str, Any] | None = None) -> dict[str, Any]:
    data = ctx.big_day
    day = data.first_day
    data_dir = ctx.data_dir("memory")
    data_dir.land(data.files)
    load = data_dir.load()
    builds = [data_dir.dbt_build(day, day) for _ in range(ctx.repeats)]
    for one in builds:
        one.check_success()
    got = data_dir.marts(day, day)
    database = data_dir.root / "baseline.duckdb"
    files = [str(f) for f in data.files]
    base_runs = []
    for _ in range(ctx.repeats):
        database.unlink(missing_ok=True)
        base_runs.append(
            run_worker("baseline_marts", {"files": files, "database": database}, ctx.source)
        )
    with duckdb.connect(str(database), read_only=True) as con:
        want = (
            con.execute(baseline.DAU_QUERY).fetchall(),
            con.execute(baseline.REVENUE_QUERY).fetchall(),
        )
    expect_rows_equal("memory day: dau", got[0], [r for r in want[0] if r[0] == day])
    expect_rows_equal("memory day: revenue", got[1], [r for r in want[1] if r[0] == day])
    ctx.done_with(data_dir)

    build_stats = summarize([b.run for b in builds], work=False)
    build_stats["dbt_nodes_seconds"] = Stats.of([b.nodes_seconds for b in builds]).as_dict()
    build_stats["dbt_models_seconds"] = Stats.of([b.models_seconds for b in builds]).as_dict()
    base_stats = summarize(base_runs)
    load_stats = summarize([load])
    peak = build_stats["peak_rss"]["high"]
    target = ctx.size.memory_target_bytes
    flat = None
    if history is not None and "rows" in history:
        flat = history["rows"][-1]["ratio_peak_rss"]
    met = peak <= target and (flat is None or flat <= 1.2)
    return {
        "title": "Memory: peak RSS building one big day",
        "input": f"one day of {data.events:,} events ({data.lines:,} lines)",
        "rows": [
            {
                "label": "baseline: SQL script, landing file to marts",
                **base_stats,
                "ratio": 1.0,
                "ratio_peak_rss": 1.0,
            },
            {
                "label": "Sluice: dlt load of the day (for reference)",
                **load_stats,
                "ratio": ratio(load_stats, base_stats),
                "ratio_peak_rss": ratio(load_stats, base_stats, "peak_rss"),
            },
            {
                "label": "Sluice: dbt build of the day",
                **build_stats,
                "ratio": ratio(build_stats, base_stats),
                "ratio_peak_rss": ratio(build_stats, base_stats, "peak_rss"),
            },
        ],
        "target": f"dbt build peak RSS <= {target / 1024**3:.2f} GiB; "
        "flat (<= 1.2x) from 1 to 365 days of history",
        "measured": f"{peak / 1024**3:.2f} GiB peak; "
        + (f"{flat:.2f}x at 365 vs 1 day of history" if flat is not None else "history not run"),
        "met": met,
        "checked": "the day's dau and revenue_daily equal the baseline's",
    }
