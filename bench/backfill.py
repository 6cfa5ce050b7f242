"""Benchmark 3, backfill: 90 days in one dbt run (what Dagster's single-run backfill does)
against a full refresh over the same data, and against 90 one-day runs.

The warehouse holds the first 90 days of the year dataset, loaded once. The full refresh
(``dbt build --full-refresh``, no window) is the baseline. One-day runs cost mostly dbt's
start-up, so at sizes where ``one_day_runs`` < 90 only that many (the window's last days) are
run and the total is extrapolated from their median; the report says so.
Checks: the marts of the window run and of the one-day runs equal the full refresh's.
Target: the window run within 1.3x of the full refresh; the one-day runs' slowdown reported.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from bench.context import Context
from bench.measure import Stats, expect_rows_equal, ratio, summarize

TARGET = 1.3
DAYS = 90


def _stats(runs: list[Any]) -> dict[str, Any]:
    stats = summarize([r.run for r in runs], work=False)
    stats["dbt_nodes_seconds"] = Stats.of([r.nodes_seconds for r in runs]).as_dict()
    return stats


def run(ctx: Context) -> dict[str, Any]:
    data = ctx.year
    first = data.first_day
    last = first + dt.timedelta(days=DAYS - 1)
    data_dir = ctx.data_dir("backfill")
    data_dir.land(data.files_for(first, last))
    data_dir.load()
    data_dir.dbt_build(None, None).check_success()  # seeds, parse: warm, untimed

    full, window = [], []
    expected = None
    for _ in range(ctx.repeats):
        full.append(data_dir.dbt_build(None, None, "--full-refresh"))
        full[-1].check_success()
        expected = data_dir.marts(first, last)
        window.append(data_dir.dbt_build(first, last))
        window[-1].check_success()
        got = data_dir.marts(first, last)
        expect_rows_equal("backfill window run: dau", got[0], expected[0])
        expect_rows_equal("backfill window run: revenue", got[1], expected[1])
    assert expected is not None

    count = min(ctx.size.one_day_runs, DAYS)
    days = [last - dt.timedelta(days=i) for i in reversed(range(count))]
    one_day = []
    for day in days:
        one_day.append(data_dir.dbt_build(day, day))
        one_day[-1].check_success()
    got = data_dir.marts(days[0], days[-1])
    wanted = set(days)
    in_days = [[row for row in rows if row[0] in wanted] for rows in expected]
    expect_rows_equal("backfill one-day runs: dau", got[0], in_days[0])
    expect_rows_equal("backfill one-day runs: revenue", got[1], in_days[1])
    ctx.done_with(data_dir)

    full_stats, window_stats, day_stats = _stats(full), _stats(window), _stats(one_day)
    # 90 one-day runs: the sum when all ran, else 90 x the median of those that ran.
    if count == DAYS:
        total = sum(r.run.seconds for r in one_day)
        total_nodes = sum(r.nodes_seconds for r in one_day)
        how = "all 90 run"
    else:
        total = DAYS * day_stats["seconds"]["median"]
        total_nodes = DAYS * day_stats["dbt_nodes_seconds"]["median"]
        how = f"{count} of 90 run, total extrapolated as 90 x their median"
    window_ratio = ratio(window_stats, full_stats)
    one_day_total = {"median": total, "low": total, "high": total, "n": 1}
    return {
        "title": "Backfill: 90 days in one run",
        "input": f"the first 90 days of the year dataset, {first} .. {last}",
        "rows": [
            {
                "label": "baseline: full refresh (dbt build --full-refresh)",
                **full_stats,
                "ratio": 1.0,
            },
            {
                "label": "one run over the 90-day window",
                **window_stats,
                "ratio": window_ratio,
                "ratio_dbt_nodes": ratio(window_stats, full_stats, "dbt_nodes_seconds"),
            },
            {"label": "one one-day run", **day_stats, "ratio": ratio(day_stats, full_stats)},
            {
                "label": f"90 one-day runs ({how})",
                "seconds": one_day_total,
                "dbt_nodes_seconds": {
                    "median": total_nodes,
                    "low": total_nodes,
                    "high": total_nodes,
                    "n": 1,
                },
                "ratio": total / full_stats["seconds"]["median"],
            },
        ],
        "target": f"window run <= {TARGET}x full refresh",
        "measured": f"{window_ratio:.2f}x; 90 one-day runs take "
        f"{total / window_stats['seconds']['median']:.1f}x the window run",
        "met": window_ratio <= TARGET,
        "checked": "window run's and one-day runs' marts equal the full refresh's",
        "speedup_vs_one_day_runs": total / window_stats["seconds"]["median"],
    }
