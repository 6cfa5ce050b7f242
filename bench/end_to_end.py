"""Benchmark 4, end to end: landing files to marts through Dagster (``sluice materialize``:
the dlt load, then one dbt build over the range) against a hand-written DuckDB SQL script
that computes the same marts from the same files (``bench/baseline.py``, written from the
metric definitions of docs/events.md, sharing no code with Sluice).

Checks: dau and revenue_daily equal on every day. Target: within 3x at S, where Dagster's and
dbt's fixed costs (about 8 s) outweigh the work, and 1.3x at M and L, where the work does.
"""

from __future__ import annotations

from typing import Any

import duckdb

from bench import baseline
from bench.context import Context
from bench.measure import expect_rows_equal, ratio, run_worker, summarize

TARGETS = {"XS": 3.0, "S": 3.0, "M": 1.3, "L": 1.3}


def run(ctx: Context) -> dict[str, Any]:
    data = ctx.month
    files = [str(f) for f in data.files]
    sluice_runs, baseline_runs = [], []
    for repeat in range(ctx.repeats):
        data_dir = ctx.data_dir(f"end_to_end-{repeat}")
        data_dir.land(data.files)
        database = data_dir.root / "baseline.duckdb"
        params = {"first": data.first_day.isoformat(), "last": data.last_day.isoformat()}
        base = run_worker("baseline_marts", {"files": files, "database": database}, ctx.source)
        ours = run_worker("sluice_materialize", params, ctx.source, env=data_dir.env)
        got = data_dir.marts(data.first_day, data.last_day)
        with duckdb.connect(str(database), read_only=True) as con:
            want = (
                con.execute(baseline.DAU_QUERY).fetchall(),
                con.execute(baseline.REVENUE_QUERY).fetchall(),
            )
        expect_rows_equal("end to end: dau", got[0], want[0])
        expect_rows_equal("end to end: revenue_daily", got[1], want[1])
        sluice_runs.append(ours)
        baseline_runs.append(base)
        ctx.done_with(data_dir)
    ours_stats, base_stats = summarize(sluice_runs), summarize(baseline_runs)
    measured = ratio(ours_stats, base_stats)
    target = TARGETS[ctx.size.name]
    return {
        "title": "End to end: landing files to marts",
        "input": f"the month dataset, {len(files)} files, {data.lines:,} lines",
        "rows": [
            {"label": "baseline: hand-written DuckDB SQL script", **base_stats, "ratio": 1.0},
            {
                "label": "Sluice: sluice materialize (Dagster: dlt load + dbt build)",
                **ours_stats,
                "ratio": measured,
            },
        ],
        "target": f"Sluice <= {target}x baseline",
        "measured": f"{measured:.2f}x",
        "met": measured <= target,
        "checked": "dau and revenue_daily equal on all days (revenue to the cent)",
    }
