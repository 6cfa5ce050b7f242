"""Benchmark 2, cost independent of history: build one day's facts and marts (``dbt build``
with start_date = end_date = that day) in warehouses holding 1, 90 and 365 days.

The day is the last day of the year dataset; each warehouse holds the files of the days before
it, loaded and built once (untimed). Reports the whole dbt invocation (about 2.5 s of it is
dbt start-up) and dbt's own node timings from run_results.json, and the peak RSS (benchmark 5
reads it to check that memory stays flat). Checks: the day's marts are equal in all three.
Target: the 365-day case within 1.2x of the 1-day case.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from bench.context import Context
from bench.measure import Stats, expect_rows_equal, ratio, summarize

TARGET = 1.2
HISTORIES = (1, 90, 365)


def run(ctx: Context) -> dict[str, Any]:
    data = ctx.year
    day = data.last_day
    rows: list[dict[str, Any]] = []
    reference = None
    slowest_nodes: dict[int, list[tuple[str, float]]] = {}
    for history in HISTORIES:
        data_dir = ctx.data_dir(f"history-{history}")
        data_dir.land(data.files_for(day - dt.timedelta(days=history - 1), day))
        data_dir.load()
        data_dir.dbt_build(None, None).check_success()
        runs = [data_dir.dbt_build(day, day) for _ in range(ctx.repeats)]
        for one in runs:
            one.check_success()
        marts = data_dir.marts(day, day)
        if reference is None:
            reference = marts
        else:
            expect_rows_equal(f"history {history} days: dau", marts[0], reference[0])
            expect_rows_equal(f"history {history} days: revenue", marts[1], reference[1])
        raw_rows = data_dir.query("select count(*) from raw.events")[0][0]
        stats = summarize([r.run for r in runs], work=False)
        stats["dbt_nodes_seconds"] = Stats.of([r.nodes_seconds for r in runs]).as_dict()
        stats["dbt_models_seconds"] = Stats.of([r.models_seconds for r in runs]).as_dict()
        slowest = sorted(runs[-1].node_seconds.items(), key=lambda item: -item[1])[:4]
        slowest_nodes[history] = [(uid.split(".")[-1], round(s, 3)) for uid, s in slowest]
        rows.append({"label": f"{history} days of history ({raw_rows:,} raw rows)", **stats})
        ctx.done_with(data_dir)
    first = rows[0]
    for row in rows:
        row["ratio"] = ratio(row, first)
        row["ratio_dbt_nodes"] = ratio(row, first, "dbt_nodes_seconds")
        row["ratio_dbt_models"] = ratio(row, first, "dbt_models_seconds")
        row["ratio_peak_rss"] = ratio(row, first, "peak_rss")
    last = rows[-1]
    return {
        "title": "Cost independent of history: one day's build",
        "input": f"the year dataset, {data.events:,} events over 365 days; built day {day}",
        "rows": rows,
        "baseline": "the 1-day case",
        "target": f"365 days <= {TARGET}x the 1-day case",
        "measured": (
            f"{last['ratio']:.2f}x whole invocation, {last['ratio_dbt_nodes']:.2f}x dbt nodes, "
            f"{last['ratio_dbt_models']:.2f}x dbt models"
        ),
        "met": last["ratio"] <= TARGET and last["ratio_dbt_nodes"] <= TARGET,
        "checked": "the day's dau and revenue_daily rows are equal in all three warehouses",
        "slowest_nodes": {str(k): v for k, v in slowest_nodes.items()},
    }
